package webhook

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

const secret = "0123456789abcdef"

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		wantErr []string // each must appear in the error; none: valid
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "sinks and notify",
			file: `
sinks:
  - name: ops
    url: https://hooks.example.com/gmini
    secret: ` + secret + `
  - name: audit
    url: http://10.0.0.7:8080/in
    allowInsecure: true
    events: [Running, Succeeded]
    secret: ` + secret + `
allowNotify:
  - "*.example.com"
  - host: ci.example.org:8443
    allowAddresses: [10.1.2.3, 10.9.0.0/16]
  - host: "[2001:db8::1]:*"
    allowInsecure: true
notifySecret: ` + secret + `
notifyEvents: [Failed]
internalCIDRs: [203.0.0.0/16]
`,
			check: func(t *testing.T, c *Config) {
				if len(c.Sinks) != 2 || len(c.Notify) != 3 || string(c.NotifySecret) != secret {
					t.Fatalf("config = %+v", c)
				}
				ops, _ := c.Sink("ops")
				if !ops.Wants("Succeeded") || !ops.Wants("Cancelled") || ops.Wants("Running") {
					t.Errorf("ops wants %v, want the final states", ops.states)
				}
				audit, _ := c.Sink("audit")
				if !slices.Equal(audit.states, []string{"Running", "Succeeded"}) {
					t.Errorf("audit wants %v", audit.states)
				}
				if !c.NotifyWants("Failed") || c.NotifyWants("Succeeded") {
					t.Errorf("notify states %v, want [Failed]", c.notifyStates)
				}
			},
		},
		{name: "JSON", file: `{"sinks": [{"name": "a", "url": "https://a.example/", "secret": "` + secret + `"}]}`},
		{name: "empty", file: ``, wantErr: []string{"neither sinks nor allowNotify"}},
		{name: "unknown field", file: "sinks: []\nretries: 3\n", wantErr: []string{`unknown field "retries"`}},
		{name: "unknown field of a sink", file: "sinks:\n  - name: a\n    url: https://a.example/\n    secret: " + secret + "\n    headers: {}\n", wantErr: []string{`unknown field "headers"`}},
		{name: "unknown field of an allowNotify entry", file: "allowNotify:\n  - host: a.example\n    port: 1\nnotifySecret: " + secret + "\n", wantErr: []string{`unknown field "port"`}},
		{name: "sink without a secret", file: "sinks:\n  - name: a\n    url: https://a.example/\n", wantErr: []string{"sinks[0] (a): secret", "at least 16 bytes"}},
		{name: "short secret", file: "sinks:\n  - name: a\n    url: https://a.example/\n    secret: short\n", wantErr: []string{"sinks[0] (a): secret"}},
		{name: "http without allowInsecure", file: "sinks:\n  - name: a\n    url: http://a.example/\n    secret: " + secret + "\n", wantErr: []string{"allowInsecure"}},
		{name: "another scheme", file: "sinks:\n  - name: a\n    url: ftp://a.example/\n    secret: " + secret + "\n", wantErr: []string{"want https://"}},
		{name: "credentials in the URL", file: "sinks:\n  - name: a\n    url: https://user:pw@a.example/\n    secret: " + secret + "\n", wantErr: []string{"carries credentials"}},
		{name: "no host", file: "sinks:\n  - name: a\n    url: https:///path\n    secret: " + secret + "\n", wantErr: []string{"has no host"}},
		{name: "bad name", file: "sinks:\n  - name: Ops Team\n    url: https://a.example/\n    secret: " + secret + "\n", wantErr: []string{`name "Ops Team"`}},
		{name: "name twice", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + "}\n  - {name: a, url: 'https://b.example/', secret: " + secret + "}\n", wantErr: []string{"sinks[1] (a)", "used twice"}},
		{name: "unknown state", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + ", events: [Done]}\n", wantErr: []string{`"Done" is not a state`}},
		{name: "Deleting is no recorded state", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + ", events: [Deleting]}\n", wantErr: []string{`"Deleting"`}},
		{name: "the metadata endpoint", file: "sinks:\n  - {name: a, url: 'http://169.254.169.254/latest', allowInsecure: true, secret: " + secret + "}\n", wantErr: []string{"169.254.169.254", "never a webhook target"}},
		{name: "allowAddresses over link-local", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + ", allowAddresses: [169.254.0.0/16]}\n", wantErr: []string{"never a webhook target"}},
		{name: "allowAddresses over everything", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + ", allowAddresses: [0.0.0.0/0]}\n", wantErr: []string{"never a webhook target"}},
		{name: "allowAddresses not an address", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + ", allowAddresses: [intranet]}\n", wantErr: []string{`"intranet" is neither`}},
		{name: "notify without a secret", file: "allowNotify: [a.example]\n", wantErr: []string{"notifySecret"}},
		{name: "notifySecret without allowNotify", file: "sinks:\n  - {name: a, url: 'https://a.example/', secret: " + secret + "}\nnotifySecret: " + secret + "\n", wantErr: []string{"need allowNotify"}},
		{name: "bad pattern", file: "allowNotify: ['hooks example']\nnotifySecret: " + secret + "\n", wantErr: []string{`allowNotify[0] "hooks example"`, "DNS name"}},
		{name: "wildcard of a top-level domain", file: "allowNotify: ['*.com']\nnotifySecret: " + secret + "\n", wantErr: []string{"two labels"}},
		{name: "wildcard of an address", file: "allowNotify: ['*.10.0.0.1']\nnotifySecret: " + secret + "\n", wantErr: []string{"wildcard"}},
		{name: "pattern port out of range", file: "allowNotify: ['a.example:70000']\nnotifySecret: " + secret + "\n", wantErr: []string{"port"}},
		{name: "pattern of the metadata endpoint", file: "allowNotify: ['169.254.169.254']\nnotifySecret: " + secret + "\n", wantErr: []string{"never a webhook target"}},
		{name: "bad internalCIDRs", file: "allowNotify: [a.example]\nnotifySecret: " + secret + "\ninternalCIDRs: [10.0.0.0/33]\n", wantErr: []string{"internalCIDRs[0]"}},
		{
			name:    "every problem is named",
			file:    "sinks:\n  - {name: a, url: 'http://a.example/', secret: " + secret + "}\n  - {name: b, url: 'https://b.example/'}\nallowNotify: ['x y']\n",
			wantErr: []string{"sinks[0] (a)", "sinks[1] (b)", "allowNotify[0]", "notifySecret"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tt.file))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want an error with %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q repeats a secret", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "webhooks.yaml")
	if err := os.WriteFile(path, []byte("sinks:\n  - {name: a, url: 'https://a.example/', secret: "+secret+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load of a missing file = %v, want an error naming it", err)
	}
	if err := os.WriteFile(path, []byte("sinks: [}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load of a malformed file = %v, want an error naming it", err)
	}
}

// TestAdmit: which notify URLs allowNotify admits; a refusal names the
// patterns that exist.
func TestAdmit(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
allowNotify:
  - "*.example.com"
  - hooks.example.org:8443
  - host: ci.example.net
    allowInsecure: true
  - "any.example.io:*"
  - "203.0.113.9"
  - "[2001:db8::1]:9000"
notifySecret: ` + secret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want bool
	}{
		{"https://a.example.com/hook?token=1", true},
		{"https://a.b.example.com/", true},
		{"https://A.Example.COM/", true},
		{"https://example.com/", false}, // a wildcard needs a label before
		{"https://a.example.com:443/", true},
		{"https://a.example.com:8443/", false}, // no port: the default only
		{"http://a.example.com/", false},       // http needs allowInsecure
		{"https://evil-example.com/", false},
		{"https://a.example.com.evil.net/", false},
		{"https://hooks.example.org:8443/x", true},
		{"https://hooks.example.org/x", false},
		{"http://ci.example.net/", true},
		{"https://ci.example.net/", true},
		{"http://ci.example.net:8080/", false},
		{"https://any.example.io:1234/", true},
		{"https://203.0.113.9/", true},
		{"https://203.0.113.10/", false},
		{"https://[2001:db8::1]:9000/", true},
		{"https://[2001:db8::1]/", false},
		{"https://localhost/", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			err := c.Admit([]string{tt.url})
			if (err == nil) != tt.want {
				t.Fatalf("Admit(%s) = %v, want admitted %v", tt.url, err, tt.want)
			}
			if err != nil {
				if failure.KindOf(err) != failure.Invalid {
					t.Errorf("kind %v, want Invalid", failure.KindOf(err))
				}
				for _, p := range []string{"*.example.com", "hooks.example.org:8443", "ci.example.net (http too)"} {
					if !strings.Contains(err.Error(), p) {
						t.Errorf("refusal %q does not name %q", err, p)
					}
				}
				if strings.Contains(err.Error(), "token") {
					t.Errorf("refusal %q repeats the query", err)
				}
			}
		})
	}
	if err := c.Admit([]string{"https://a.example.com/", "https://nope.example/"}); err == nil || !strings.Contains(err.Error(), `"notify"[1]`) {
		t.Errorf("Admit of a list = %v, want the second URL named", err)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://h.example/p?token=secret":       "https://h.example/p",
		"https://user:pw@h.example:8443/p#frag":  "https://h.example:8443/p",
		"http://h.example/":                      "http://h.example/",
		"https://h.example/a%20b?x=1&y=2":        "https://h.example/a%20b",
		"https://h.example/p?":                   "https://h.example/p",
		"https://[2001:db8::1]:9000/x?sig=abcde": "https://[2001:db8::1]:9000/x",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%s) = %s, want %s", in, got, want)
		}
	}
}
