package app

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			if c.Listen != ":8080" || c.Template != "gmini-runner" || c.QPS != 1000 || c.Burst != 2000 ||
				c.MaxBodyBytes != 64<<10 || c.APITimeout != 10*time.Second || c.ShutdownTimeout != 25*time.Second ||
				c.LogFormat != "json" || c.LogLevel != slog.LevelInfo || c.Namespace != "" {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{name: "pod namespace from the downward API", env: map[string]string{"POD_NAMESPACE": "gmini-dev"}, check: func(t *testing.T, c Config) {
			if c.Namespace != "gmini-dev" {
				t.Errorf("namespace = %q", c.Namespace)
			}
		}},
		{name: "GMINI_NAMESPACE wins over POD_NAMESPACE", env: map[string]string{"POD_NAMESPACE": "a", "GMINI_NAMESPACE": "b"}, check: func(t *testing.T, c Config) {
			if c.Namespace != "b" {
				t.Errorf("namespace = %q", c.Namespace)
			}
		}},
		{name: "flags win over the environment", args: []string{"--kube-qps", "200", "--listen", "127.0.0.1:9000"}, env: map[string]string{"GMINI_KUBE_QPS": "7"}, check: func(t *testing.T, c Config) {
			if c.QPS != 200 || c.Listen != "127.0.0.1:9000" {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "environment", env: map[string]string{"GMINI_API_TIMEOUT": "3s", "GMINI_LOG_LEVEL": "debug", "GMINI_LOG_FORMAT": "text"}, check: func(t *testing.T, c Config) {
			if c.APITimeout != 3*time.Second || c.LogLevel != slog.LevelDebug || c.LogFormat != "text" {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "bad qps", args: []string{"--kube-qps", "fast"}, wantErr: "kube-qps"},
		{name: "zero qps", args: []string{"--kube-qps", "0"}, wantErr: "kube-qps"},
		{name: "negative qps", args: []string{"--kube-qps", "-5"}, wantErr: "kube-qps"},
		{name: "NaN qps", args: []string{"--kube-qps", "NaN"}, wantErr: "kube-qps"},
		{name: "Inf qps", args: []string{"--kube-qps", "Inf"}, wantErr: "kube-qps"},
		{name: "+Inf qps from the environment", env: map[string]string{"GMINI_KUBE_QPS": "+Inf"}, wantErr: "kube-qps"},
		{name: "qps beyond float32", args: []string{"--kube-qps", "1e39"}, wantErr: "kube-qps"},
		{name: "fractional qps", args: []string{"--kube-qps", "0.5"}, check: func(t *testing.T, c Config) {
			if c.QPS != 0.5 {
				t.Errorf("qps = %v", c.QPS)
			}
		}},
		{name: "zero burst", args: []string{"--kube-burst", "0"}, wantErr: "kube-burst"},
		{name: "body limit above the argument limit", args: []string{"--max-body-bytes", "200000"}, wantErr: "max-body-bytes"},
		{name: "bad timeout", env: map[string]string{"GMINI_API_TIMEOUT": "soon"}, wantErr: "api-timeout"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "log-level"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: "log-format"},
		{name: "empty template", args: []string{"--template", ""}, wantErr: "template"},
		{name: "stray argument", args: []string{"serve"}, wantErr: "unexpected arguments"},
		{name: "history and auth off by default", check: func(t *testing.T, c Config) {
			if c.HistoryDSN != "" || c.HistoryRetention != 720*time.Hour || c.Auth != "none" || c.AuthAudience != "gmini" || c.MaxInflight != 64 {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "history, auth and limits from the environment", env: map[string]string{
			"GMINI_HISTORY_DSN": "postgres://u@db:5432/gmini", "GMINI_HISTORY_RETENTION": "24h", "GMINI_AUTH": "kubernetes",
			"GMINI_MAX_INFLIGHT": "0", "POD_NAME": "gmini-backend-abc"}, check: func(t *testing.T, c Config) {
			if c.HistoryDSN != "postgres://u@db:5432/gmini" || c.HistoryRetention != 24*time.Hour || c.Auth != "kubernetes" ||
				c.MaxInflight != 0 || c.Identity != "gmini-backend-abc" {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "sqlite history", args: []string{"--history-dsn", "sqlite:/var/lib/gmini/history.db"}, check: func(t *testing.T, c Config) {
			if c.HistoryDSN != "sqlite:/var/lib/gmini/history.db" {
				t.Errorf("dsn = %q", c.HistoryDSN)
			}
		}},
		{name: "unknown database", args: []string{"--history-dsn", "mysql://root:secret@db/gmini"}, wantErr: `history-dsn: "mysql:..." is not a database gmini knows`},
		{name: "bad retention", args: []string{"--history-retention", "forever"}, wantErr: "history-retention"},
		{name: "bad auth", args: []string{"--auth", "oidc"}, wantErr: "auth \"oidc\": want none or kubernetes"},
		{name: "auth without an audience", args: []string{"--auth", "kubernetes", "--auth-audience", ""}, wantErr: "auth-audience"},
		{name: "negative inflight bound", args: []string{"--max-inflight", "-1"}, wantErr: "max-inflight"},
		{name: "log reads bounded by default", check: func(t *testing.T, c Config) {
			if c.MaxLogReads != 16 {
				t.Errorf("max log reads = %d, want 16", c.MaxLogReads)
			}
		}},
		{name: "log reads from the environment", env: map[string]string{"GMINI_MAX_LOG_READS": "0"}, check: func(t *testing.T, c Config) {
			if c.MaxLogReads != 0 {
				t.Errorf("max log reads = %d, want 0", c.MaxLogReads)
			}
		}},
		{name: "negative log reads bound", args: []string{"--max-log-reads", "-1"}, wantErr: "max-log-reads"},
		{name: "log follows bounded apart", env: map[string]string{"GMINI_MAX_LOG_READS": "3"}, check: func(t *testing.T, c Config) {
			if c.MaxLogFollows != 500 || c.MaxLogReads != 3 {
				t.Errorf("max log follows = %d, reads %d; want 500 and 3", c.MaxLogFollows, c.MaxLogReads)
			}
		}},
		{name: "log follows from a flag", args: []string{"--max-log-follows", "7"}, check: func(t *testing.T, c Config) {
			if c.MaxLogFollows != 7 {
				t.Errorf("max log follows = %d, want 7", c.MaxLogFollows)
			}
		}},
		{name: "bad log follows bound", args: []string{"--max-log-follows", "many"}, wantErr: "max-log-follows"},
		{name: "experiment sets bounded by default", check: func(t *testing.T, c Config) {
			if c.MaxSetBytes != 8<<20 || c.MaxInflightSets != 2 || c.SetConcurrency != 16 {
				t.Errorf("sets: max bytes %d, inflight %d, concurrency %d; want 8 MiB, 2, 16", c.MaxSetBytes, c.MaxInflightSets, c.SetConcurrency)
			}
		}},
		{name: "experiment sets from flags and the environment", args: []string{"--set-concurrency", "4"},
			env: map[string]string{"GMINI_MAX_SET_BYTES": "1048576", "GMINI_MAX_INFLIGHT_SETS": "0"}, check: func(t *testing.T, c Config) {
				if c.MaxSetBytes != 1<<20 || c.MaxInflightSets != 0 || c.SetConcurrency != 4 {
					t.Errorf("sets: max bytes %d, inflight %d, concurrency %d", c.MaxSetBytes, c.MaxInflightSets, c.SetConcurrency)
				}
			}},
		{name: "set limit over 64 MiB", args: []string{"--max-set-bytes", "100000000"}, wantErr: "max-set-bytes"},
		{name: "zero set concurrency", args: []string{"--set-concurrency", "0"}, wantErr: "set-concurrency"},
		{name: "negative inflight sets", args: []string{"--max-inflight-sets", "-1"}, wantErr: "max-inflight-sets"},
		{name: "unknown flag", args: []string{"--port", "1"}, wantErr: "flag provided but not defined"},
		{name: "identity from the flag, as given", args: []string{"--identity", "replica-a"}, env: map[string]string{"POD_NAME": "p"}, check: func(t *testing.T, c Config) {
			if c.Identity != "replica-a" {
				t.Errorf("identity = %q, want replica-a", c.Identity)
			}
		}},
		{name: "identity from GMINI_IDENTITY, as given", env: map[string]string{"GMINI_IDENTITY": "replica-b", "POD_NAME": "p"}, check: func(t *testing.T, c Config) {
			if c.Identity != "replica-b" {
				t.Errorf("identity = %q, want replica-b", c.Identity)
			}
		}},
		{name: "identity without a pod name: the host name and a suffix", check: func(t *testing.T, c Config) {
			host, err := os.Hostname()
			if err != nil {
				host = "gmini-backend"
			}
			if rest, ok := strings.CutPrefix(c.Identity, host+"_"); !ok || len(rest) < 8 {
				t.Errorf("identity = %q, want %s_ and a random suffix", c.Identity, host)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			c, err := parseConfig(tt.args, getenv, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// Two backends on one host, without a pod name or an identity, must not
// both believe they hold the recorder's lease.
func TestIdentityUniquePerProcess(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 20 {
		c, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.Identity == "" || seen[c.Identity] {
			t.Fatalf("identity %q is empty or repeated: two backends on one host would share the lease", c.Identity)
		}
		seen[c.Identity] = true
	}
}
