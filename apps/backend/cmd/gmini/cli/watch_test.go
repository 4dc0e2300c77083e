package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// eventsBackend answers every stream with the given state changes of
// experiment e, then done with the last one's state.
func eventsBackend(t *testing.T, states ...string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i, st := range states {
			b, _ := json.Marshal(wire.Event{Seq: int64(i + 1), Experiment: "e", State: st})
			fmt.Fprintf(w, "id: %d\nevent: state\ndata: %s\n\n", i+1, b)
			if st == "Queued" {
				fmt.Fprintf(w, "event: position\ndata: {\"experiment\":\"e\",\"name\":\"team-a\",\"position\":3}\n\n")
			}
		}
		if strings.HasSuffix(r.URL.Path, "/experiments/e/events") {
			fmt.Fprintf(w, "event: done\ndata: {\"state\":%q}\n\n", states[len(states)-1])
		} else {
			fmt.Fprintf(w, "event: done\ndata: {\"counts\":{%q:1}}\n\n", states[len(states)-1])
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestWatch(t *testing.T) {
	for _, tt := range []struct {
		name   string
		states []string
		args   []string
		code   int
		out    []string // substrings of stdout, in order
		errOut string
		absent string // not in stdout
	}{
		{"queued, with its position", []string{"Queued", "Running", "Succeeded"}, []string{"watch", "e"}, ExitOK,
			[]string{"e\tQueued", "e\tQueued\tposition 3 in team-a", "e\tRunning"}, "", ""},
		{"a set's item queued", []string{"Queued", "Succeeded"}, []string{"watch", "--set", "s"}, ExitOK,
			[]string{"e\tQueued\tposition 3 in team-a"}, "", ""},
		{"json lines: changes of state only", []string{"Queued", "Succeeded"}, []string{"watch", "e", "-o", "json"}, ExitOK,
			[]string{`"state":"Queued"`, `"state":"Succeeded"`}, "", "position"},
		{"succeeded", []string{"Submitted", "Running", "Succeeded"}, []string{"watch", "e"}, ExitOK,
			[]string{"TIME", "e\tSubmitted", "e\tRunning", "e\tSucceeded"}, "", ""},
		{"failed", []string{"Running", "Failed"}, []string{"watch", "e"}, ExitError, []string{"e\tFailed"}, "ended Failed", ""},
		{"json lines", []string{"Running", "Succeeded"}, []string{"watch", "e", "-o", "json"}, ExitOK,
			[]string{`{"seq":1,"experiment":"e","state":"Running"`, `{"seq":2,"experiment":"e","state":"Succeeded"`}, "", ""},
		{"wide", []string{"Cancelled"}, []string{"watch", "e", "-o", "wide"}, ExitError, []string{"SEQ", "1\t"}, "ended Cancelled", ""},
		{"a set", []string{"Succeeded"}, []string{"watch", "--set", "s"}, ExitOK, []string{"e\tSucceeded"}, "", ""},
		{"a set with failures", []string{"Failed"}, []string{"watch", "--set", "s"}, ExitError, nil, "1 Failed", ""},
		{"no target", nil, []string{"watch"}, ExitUsage, nil, "needs an experiment ID", ""},
		{"two targets", nil, []string{"watch", "e", "--all"}, ExitUsage, nil, "one of them", ""},
		{"a filter without --all", nil, []string{"watch", "e", "--state", "Running"}, ExitUsage, nil, "--all only", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := "http://127.0.0.1:1"
			if tt.states != nil {
				srv = eventsBackend(t, tt.states...)
			}
			code, out, errs := run(t, srv, "", nil, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.errOut) {
				t.Fatalf("exit %d, stderr %q; want %d with %q", code, errs, tt.code, tt.errOut)
			}
			if tt.absent != "" && strings.Contains(out, tt.absent) {
				t.Errorf("stdout %q has %q", out, tt.absent)
			}
			rest := out
			for _, want := range tt.out {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout %q lacks %q (in order)", out, want)
				}
				rest = rest[i+len(want):]
			}
		})
	}
}

func TestParseSetFileYAML(t *testing.T) {
	for _, tt := range []struct {
		name, file, id string
		want           string
	}{
		{"a set", "id: sweep\nitems:\n  - experiment: {id: a, lr: 0.1}\n  - id: b\n", "", `sweep [{"experiment":{"id":"a","lr":0.1}} {"experiment":{"id":"b"}}]`},
		{"a list with --id", "- id: a\n- experiment:\n    id: b\n  queue: default\n", "sw", `sw [{"experiment":{"id":"a"}} {"experiment":{"id":"b"},"queue":"default"}]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set, err := parseSetFile([]byte(tt.file), tt.id)
			if err != nil {
				t.Fatal(err)
			}
			var items []string
			for _, it := range set.Items {
				items = append(items, string(it))
			}
			if got := set.ID + " [" + strings.Join(items, " ") + "]"; got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := parseSetFile([]byte("id: [unclosed\n"), ""); err == nil || !strings.Contains(err.Error(), "neither JSON nor YAML") {
		t.Errorf("bad YAML: %v", err)
	}
}

// TestEventPrintersHeaderFirst: a position that comes before any change of
// state (its look can beat the stream's catch-up) still comes under the
// table's header, which is printed once.
func TestEventPrintersHeaderFirst(t *testing.T) {
	for _, output := range []string{"", "wide"} {
		var out strings.Builder
		o := &options{output: output, stdout: &out}
		event, position := o.eventPrinters()
		if err := position(wire.Position{Experiment: "e", Queue: wire.Queue{Name: "q", Position: new(int32(2))}}); err != nil {
			t.Fatal(err)
		}
		if err := event(wire.Event{Seq: 1, Experiment: "e", State: "Queued"}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 3 || !strings.Contains(lines[0], "EXPERIMENT") || !strings.Contains(lines[1], "position 2 in q") || strings.Count(out.String(), "EXPERIMENT") != 1 {
			t.Errorf("-o %q: %q, want the header, the position row, the change", output, out.String())
		}
		if cells := strings.Split(lines[1], "\t"); output == "wide" && len(cells) != 9 {
			t.Errorf("-o wide: the position row has %d cells, want the header's 9: %q", len(cells), lines[1])
		}
	}
}
