package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
)

// TestLogsFollow: gmini logs -f prints every attempt's output as it comes
// and exits 0 when the experiment ends.
func TestLogsFollow(t *testing.T) {
	env := apitest.Backend(t)
	c, err := client.New(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(context.Background(), map[string]any{"id": "cli-f"}); err != nil {
		t.Fatal(err)
	}
	env.Attempt(t, "cli-f", "p1", 100, -1)
	env.Logs.Write("p1", "Running Experiment: cli-f\n")
	go func() {
		time.Sleep(50 * time.Millisecond)
		env.Logs.Write("p1", "result 42\n")
		env.Logs.End("p1")
		env.Attempt(t, "cli-f", "p1", 100, 0)
		env.Finish(t, "cli-f", true)
	}()
	// --timeout does not bound a follow.
	code, out, errs := run(t, env.URL, "", nil, "--timeout", "10ms", "logs", "-f", "cli-f")
	if code != ExitOK || out != "Running Experiment: cli-f\nresult 42\n" {
		t.Errorf("logs -f = %d %q %q", code, out, errs)
	}
	if code, _, errs := run(t, env.URL, "", nil, "logs", "-f", "nope"); code != ExitError || !strings.Contains(errs, "404") {
		t.Errorf("logs -f of an unknown experiment = %d %q, want exit 1 with the 404", code, errs)
	}
}

// TestLogsFollowResumes: a connection dropped mid-follow is resumed where
// it stopped: nothing printed twice.
func TestLogsFollowResumes(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		switch n.Add(1) {
		case 1:
			fmt.Fprint(w, "retry: 1\n\nevent: attempt\nid: 2:0\ndata: ==> attempt 2 of 2: pod p2 (Running) <==\n\nid: 2:6\ndata: first\ndata: \n\n")
		default:
			if got := r.Header.Get("Last-Event-ID"); got != "2:6" {
				http.Error(w, "Last-Event-ID "+got, http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, "id: 2:13\ndata: second\ndata: \n\nevent: done\ndata: {\"state\":\"Succeeded\",\"source\":\"job\"}\n\n")
		}
	}))
	defer srv.Close()
	code, out, errs := run(t, srv.URL, "", nil, "logs", "--follow", "e1")
	if code != ExitOK || out != "==> attempt 2 of 2: pod p2 (Running) <==\nfirst\nsecond\n" {
		t.Errorf("logs --follow = %d %q %q", code, out, errs)
	}
}
