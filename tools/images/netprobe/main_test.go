package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	// seq replays outcomes, repeating the last one.
	seq := func(outcomes ...error) func(context.Context, *Result) error {
		i := 0
		return func(context.Context, *Result) error {
			err := outcomes[min(i, len(outcomes)-1)]
			i++
			return err
		}
	}
	tests := []struct {
		name   string
		expect string
		try    func(context.Context, *Result) error
		want   Result
	}{
		{"open at once", "open", seq(nil), Result{Met: true, Outcome: "open", Tries: 1}},
		{"open after the engine caught up", "open", seq(refused, refused, nil), Result{Met: true, Outcome: "open", Tries: 3}},
		{"never open", "open", seq(refused), Result{Outcome: "refused", Error: refused.Error()}},
		{"blocked from the start", "blocked", seq(refused), Result{Met: true, Outcome: "refused", Error: refused.Error()}},
		{"blocked once the engine saw the pod", "blocked", seq(nil, nil, context.DeadlineExceeded),
			Result{Met: true, Outcome: "timeout", Error: context.DeadlineExceeded.Error(), OpenBeforeBlocked: 2}},
		{"open again after a block", "blocked", seq(refused, nil), Result{Outcome: "open", Tries: 2}},
		{"never blocked", "blocked", seq(nil), Result{Outcome: "open"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Result{Expect: tt.expect}
			probe(&r, tt.try, time.Second, time.Millisecond, 50*time.Millisecond, 20*time.Millisecond)
			if r.Met != tt.want.Met || r.Outcome != tt.want.Outcome || r.Error != tt.want.Error ||
				(tt.want.Met && r.OpenBeforeBlocked != tt.want.OpenBeforeBlocked) {
				t.Errorf("got %+v, want %+v", r, tt.want)
			}
			if tt.want.Tries != 0 && r.Tries != tt.want.Tries {
				t.Errorf("tries = %d, want %d", r.Tries, tt.want.Tries)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]string{
		nil: "open",
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}: "refused",
		context.DeadlineExceeded:                            "timeout",
		errors.New("no route to host"):                      "error",
	} {
		if got := classify(err); got != want {
			t.Errorf("classify(%v) = %q, want %q", err, got, want)
		}
	}
}

// TestRun talks to real sockets: a server that answers 201, and a port
// nothing listens on.
func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"created":true}`))
	}))
	t.Cleanup(srv.Close) // after the parallel subtests, unlike defer
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	for _, tt := range []struct {
		name string
		args []string
		code int
		want Result
	}{
		{"post answered", []string{"post", srv.URL + "/experiment", `{}`}, 0,
			Result{Action: "post", Expect: "open", Met: true, Outcome: "open", Status: 201, Body: `{"created":true}`}},
		{"dial answered", []string{"dial", strings.TrimPrefix(srv.URL, "http://")}, 0,
			Result{Action: "dial", Expect: "open", Met: true, Outcome: "open"}},
		{"dial refused, expected", []string{"-expect", "blocked", "-hold", "100ms", "dial", closed}, 0,
			Result{Action: "dial", Expect: "blocked", Met: true, Outcome: "refused"}},
		{"post refused, unexpected", []string{"-within", "200ms", "post", "http://" + closed + "/", `{}`}, 1,
			Result{Action: "post", Expect: "open", Outcome: "refused"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			if code := run(append([]string{"-interval", "10ms"}, tt.args...), &out, &errOut); code != tt.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.code, errOut.String())
			}
			var r Result
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
			if r.Action != tt.want.Action || r.Expect != tt.want.Expect || r.Met != tt.want.Met || r.Outcome != tt.want.Outcome ||
				r.Status != tt.want.Status || r.Body != tt.want.Body {
				t.Errorf("got %+v, want %+v", r, tt.want)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"get", "x"}, {"-expect", "maybe", "dial", "x:1"}, {"post", "x"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and a message", args, code, errOut.String())
		}
	}
}

func TestTick(t *testing.T) {
	var out, errOut strings.Builder
	start := time.Now()
	if code := run([]string{"-count", "3", "-every", "20ms", "tick", `{"experiment":{"id":"x"}}`}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("lines %q, want 3", lines)
	}
	for i, l := range lines {
		var n int
		var ts string
		if _, err := fmt.Sscanf(l, "tick %d %s", &n, &ts); err != nil || n != i {
			t.Errorf("line %d %q: %v", i, l, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("line %d time %q: %v", i, ts, err)
		}
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("3 lines 20ms apart took %s", d)
	}
}
