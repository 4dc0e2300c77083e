package app

import (
	"io"
	"strings"
	"testing"
)

func TestDefaultQueueFlag(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "none by default"},
		{name: "flag", args: []string{"--default-queue", "team-a"}, want: "team-a"},
		{name: "environment", env: map[string]string{"GMINI_DEFAULT_QUEUE": "team-b"}, want: "team-b"},
		{name: "flag wins", args: []string{"--default-queue", "team-a"}, env: map[string]string{"GMINI_DEFAULT_QUEUE": "team-b"}, want: "team-a"},
		{name: "not a label", args: []string{"--default-queue", "Team_A"}, wantErr: `default-queue "Team_A": want a LocalQueue name`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig = %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || c.DefaultQueue != tt.want {
				t.Fatalf("parseConfig = %q, %v; want %q", c.DefaultQueue, err, tt.want)
			}
		})
	}
}
