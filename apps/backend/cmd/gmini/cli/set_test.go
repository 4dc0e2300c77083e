package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func TestSetCommands(t *testing.T) {
	srv := apitest.Server(t).URL
	file := filepath.Join(t.TempDir(), "sweep.json")
	set := `{"id": "sweep", "items": [{"experiment": {"id": "s-1", "lr": 0.1}}, {"id": "s-2", "lr": 0.2}]}`
	if err := os.WriteFile(file, []byte(set), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, srv, "", nil, "set", "submit", "-f", file)
	if code != ExitOK || !strings.Contains(out, "set sweep: 2 created, 0 existing") || strings.Contains(out, "INDEX") {
		t.Fatalf("set submit = %d %q %q; want the summary and no failed items", code, out, errs)
	}
	code, out, _ = run(t, srv, set, nil, "set", "submit", "-f", "-", "-o", "json")
	var sub wire.SetSubmission
	if code != ExitOK || json.Unmarshal([]byte(out), &sub) != nil || sub.Outcomes.Existing != 2 {
		t.Errorf("set submit again -o json = %d %q; want 2 existing", code, out)
	}

	// JSON lines of items, and a JSON array, both with --id; one item
	// invalid: every item answered, exit 1.
	lines := `{"id": "l-1"}` + "\n" + `{"experiment": {"id": "l-2"}, "extra": 1}` + "\n" + `{"id": "l-3"}` + "\n"
	code, out, errs = run(t, srv, lines, nil, "set", "submit", "-f", "-", "--id", "lines")
	if code != ExitError || !strings.Contains(out, "set lines: 2 created, 0 existing, 0 conflict, 1 invalid") ||
		!strings.Contains(out, "1       l-2   invalid") || !strings.Contains(errs, "1 of the 3 items of set lines failed") {
		t.Errorf("set submit of JSON lines = %d %q %q; want exit 1 naming the invalid item", code, out, errs)
	}
	code, out, _ = run(t, srv, `[{"id": "a-1"}, {"id": "a-2"}]`, nil, "set", "submit", "-f", "-", "--id", "array", "-o", "wide")
	if rows := strings.Split(strings.TrimSpace(out), "\n"); code != ExitOK || len(rows) != 4 || !strings.HasPrefix(rows[1], "INDEX") {
		t.Errorf("set submit of an array -o wide = %d %q; want the summary, a header and both items", code, out)
	}

	code, out, _ = run(t, srv, "", nil, "set", "get", "sweep")
	if rows := strings.Split(strings.TrimSpace(out), "\n"); code != ExitOK || len(rows) != 4 || rows[0] != "set sweep: 2 experiments, 2 Submitted" {
		t.Errorf("set get = %d %q; want the counts, a header and 2 rows", code, out)
	}
	code, out, _ = run(t, srv, "", nil, "set", "get", "sweep", "--limit", "1", "-o", "yaml")
	var got wire.Set
	if code != ExitOK || yaml.Unmarshal([]byte(out), &got) != nil || got.Total != 2 || len(got.Items) != 1 || got.Continue == "" {
		t.Errorf("set get --limit 1 -o yaml = %d %q", code, out)
	}
	code, out, _ = run(t, srv, "", nil, "set", "get", "sweep", "--limit", "1", "-A", "-o", "json")
	var whole wire.Set
	if code != ExitOK || json.Unmarshal([]byte(out), &whole) != nil || len(whole.Items) != 2 || whole.Continue != "" {
		t.Errorf("set get -A = %d %q; want both items", code, out)
	}

	code, out, _ = run(t, srv, "", nil, "set", "cancel", "sweep")
	if code != ExitOK || !strings.Contains(out, "set sweep: 2 cancelled, 0 finished already, 0 failed (of 2)") {
		t.Errorf("set cancel = %d %q", code, out)
	}
}

func TestSetExitCodes(t *testing.T) {
	srv := apitest.Server(t).URL
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id": "m-%d"}`, i)
	}
	for _, tt := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		says  string
	}{
		{name: "no subcommand", args: []string{"set"}, code: ExitUsage, says: "submit, get or cancel"},
		{name: "unknown subcommand", args: []string{"set", "launch"}, code: ExitUsage, says: "unknown command"},
		{name: "submit without -f", args: []string{"set", "submit"}, code: ExitUsage, says: "-f"},
		{name: "items without --id", stdin: `[{"id": "a"}]`, args: []string{"set", "submit", "-f", "-"}, code: ExitUsage, says: "--id"},
		{name: "--id against the set's own", stdin: `{"id": "a", "items": [{"id": "x"}]}`, args: []string{"set", "submit", "-f", "-", "--id", "b"}, code: ExitUsage, says: "differs"},
		{name: "bad set ID", stdin: `[{"id": "a"}]`, args: []string{"set", "submit", "-f", "-", "--id", "a b"}, code: ExitUsage, says: "character ' '"},
		{name: "1,001 items", stdin: "[" + strings.Join(many, ",") + "]", args: []string{"set", "submit", "-f", "-", "--id", "big"}, code: ExitUsage, says: "at most 1000"},
		{name: "not JSON", stdin: `{"id": `, args: []string{"set", "submit", "-f", "-", "--id", "s"}, code: ExitUsage, says: "value 1"},
		{name: "an item not an object", stdin: `[1]`, args: []string{"set", "submit", "-f", "-", "--id", "s"}, code: ExitUsage, says: "item 0: not a JSON object"},
		{name: "empty", stdin: " ", args: []string{"set", "submit", "-f", "-", "--id", "s"}, code: ExitUsage, says: "no items"},
		{name: "an ID twice", stdin: `[{"id": "a"}, {"id": "a"}]`, args: []string{"set", "submit", "-f", "-", "--id", "s"}, code: ExitError, says: "400"},
		{name: "unknown set", args: []string{"set", "get", "nope"}, code: ExitError, says: "404"},
		{name: "cancel an unknown set", args: []string{"set", "cancel", "nope"}, code: ExitError, says: "404"},
		{name: "get without an ID", args: []string{"set", "get"}, code: ExitUsage, says: "arg"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := run(t, srv, tt.stdin, nil, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.says) {
				t.Errorf("exit %d, stderr %q; want %d saying %q", code, errs, tt.code, tt.says)
			}
		})
	}
}
