package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// run runs the command as a user would, against server.
func run(t *testing.T, server, stdin string, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "GMINI_SERVER" {
			return server
		}
		return env[k]
	}
	code = Main(args, strings.NewReader(stdin), &out, &errb, getenv)
	return code, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	srv := apitest.Server(t).URL
	code, out, errs := run(t, srv, `{"id": "cli-1", "key": "k"}`, nil, "submit", "-f", "-")
	if code != ExitOK || !strings.Contains(out, "experiment cli-1 created") {
		t.Fatalf("submit = %d %q %q", code, out, errs)
	}
	code, out, _ = run(t, srv, `{"key": "k", "id": "cli-1"}`, nil, "submit", "-f", "-")
	if code != ExitOK || !strings.Contains(out, "experiment cli-1 exists") {
		t.Errorf("submit again = %d %q; want exists", code, out)
	}

	code, out, _ = run(t, srv, "", nil, "get", "cli-1", "-o", "json")
	var st wire.Status
	if code != ExitOK || json.Unmarshal([]byte(out), &st) != nil || st.ID != "cli-1" || st.State != "Pending" {
		t.Errorf("get -o json = %d %q", code, out)
	}
	code, out, _ = run(t, srv, "", nil, "get", "cli-1", "-o", "yaml")
	if code != ExitOK || yaml.Unmarshal([]byte(out), &st) != nil || st.ID != "cli-1" {
		t.Errorf("get -o yaml = %d %q", code, out)
	}
	code, out, _ = run(t, srv, "", nil, "get", "cli-1")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != ExitOK || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], "cli-1") {
		t.Errorf("get = %d %q; want a header and one row", code, out)
	}

	file := filepath.Join(t.TempDir(), "exp.json")
	if err := os.WriteFile(file, []byte(`{"id": "cli-2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run(t, srv, "", nil, "submit", "-f", file); code != ExitOK {
		t.Fatalf("submit -f FILE = %d %q %q", code, out, errs)
	}
	code, out, _ = run(t, srv, "", nil, "ls", "-A", "--limit", "1", "-o", "wide")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || len(lines) != 3 || !strings.Contains(lines[0], "SUBMITTED-BY") || !strings.HasPrefix(lines[1], "cli-2 ") || !strings.HasPrefix(lines[2], "cli-1 ") {
		t.Errorf("ls -A --limit 1 -o wide = %d %q; want both, newest first, wide columns", code, out)
	}

	code, out, _ = run(t, srv, "", nil, "cancel", "cli-2")
	if code != ExitOK || !strings.Contains(out, "cli-2 cancelled") {
		t.Errorf("cancel = %d %q", code, out)
	}
}

func TestExitCodes(t *testing.T) {
	srv := apitest.Server(t).URL
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		says string
	}{
		{name: "unknown experiment", args: []string{"get", "nope"}, code: ExitError, says: "404"},
		{name: "no output yet", args: []string{"logs", "nope"}, code: ExitError, says: "404"},
		{name: "no ID", args: []string{"get"}, code: ExitUsage, says: "arg"},
		{name: "unknown command", args: []string{"launch"}, code: ExitUsage, says: "unknown command"},
		{name: "bad output", args: []string{"ls", "-o", "xml"}, code: ExitUsage, says: "--output"},
		{name: "unknown flag", args: []string{"ls", "--colour"}, code: ExitUsage, says: "colour"},
		{name: "submit without -f", args: []string{"submit"}, code: ExitUsage, says: "-f"},
		{name: "bad server URL", args: []string{"--server", "localhost:1", "get", "x"}, code: ExitUsage, says: "base URL"},
		{name: "no backend there", args: []string{"--server", "http://127.0.0.1:1", "get", "x"}, code: ExitError, says: "connect"},
		{name: "token file missing", args: []string{"get", "x"}, env: map[string]string{"GMINI_TOKEN_FILE": "/nonexistent/token"}, code: ExitUsage, says: "token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := run(t, srv, "", tt.env, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.says) {
				t.Errorf("exit %d, stderr %q; want %d saying %q", code, errs, tt.code, tt.says)
			}
		})
	}
}

// The token goes to the backend and nowhere else: not in the output, not
// in an error.
func TestTokenIsNeverPrinted(t *testing.T) {
	const token = "s3cret-token"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--token", token, "--server", "http://127.0.0.1:1", "get", "x"},
		{"--token-file", file, "--server", "http://127.0.0.1:1", "ls", "-o", "json"},
	} {
		_, out, errs := run(t, "", "", nil, args...)
		if strings.Contains(out+errs, token) {
			t.Errorf("%v printed the token: %q %q", args, out, errs)
		}
	}
}
