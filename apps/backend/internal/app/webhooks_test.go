package app

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWebhookFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("sinks:\n  - {name: ops, url: 'https://hooks.example.com/', secret: 0123456789abcdef}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("sinks:\n  - {name: ops, url: 'http://hooks.example.com/'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	history := "--history-dsn=sqlite:/tmp/h.db"
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr []string
		check   func(t *testing.T, c Config)
	}{
		{name: "off by default", check: func(t *testing.T, c Config) {
			if c.WebhooksFile != "" || c.Webhooks != nil || c.WebhookMaxAge != 24*time.Hour || c.WebhookWorkers != 8 || c.WebhookTimeout != 10*time.Second {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "a file", args: []string{history, "--webhooks-file", good, "--webhook-max-age", "2h"}, check: func(t *testing.T, c Config) {
			if c.Webhooks == nil || len(c.Webhooks.Current().Sinks) != 1 || c.WebhookMaxAge != 2*time.Hour {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "from the environment", args: []string{history}, env: map[string]string{"GMINI_WEBHOOKS_FILE": good, "GMINI_WEBHOOK_WORKERS": "3"}, check: func(t *testing.T, c Config) {
			if c.Webhooks == nil || c.WebhookWorkers != 3 {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "without history", args: []string{"--webhooks-file", good}, wantErr: []string{"webhooks-file needs --history-dsn"}},
		{name: "a bad file", args: []string{history, "--webhooks-file", bad}, wantErr: []string{bad, "sinks[0] (ops)", "allowInsecure"}},
		{name: "a missing file", args: []string{history, "--webhooks-file", filepath.Join(dir, "none.yaml")}, wantErr: []string{"none.yaml"}},
		{name: "bad max age", args: []string{"--webhook-max-age", "forever"}, wantErr: []string{"webhook-max-age"}},
		{name: "no workers", args: []string{"--webhook-workers", "0"}, wantErr: []string{"webhook-workers"}},
		{name: "bad timeout", args: []string{"--webhook-timeout", "-1s"}, wantErr: []string{"webhook-timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			c, err := parseConfig(tt.args, getenv, io.Discard)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("parseConfig succeeded, want an error with %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
