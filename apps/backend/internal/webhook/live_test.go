package webhook

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
)

// TestLiveReload: the file as a Secret's volume presents it (a symlink the
// kubelet swaps), changed under a running backend: a valid change is
// applied, an invalid one or a missing file keeps what is in force, and
// each change is counted once.
func TestLiveReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "webhooks.yaml")
	version := 0
	// write swaps the file as the kubelet does: a new directory, then the
	// ..data symlink renamed over the old one.
	write := func(content string) {
		t.Helper()
		version++
		ver := filepath.Join(dir, fmt.Sprintf("..v%d", version))
		if err := os.Mkdir(ver, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ver, "webhooks.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ver), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(file); err != nil {
			if err := os.Symlink(filepath.Join("..data", "webhooks.yaml"), file); err != nil {
				t.Fatal(err)
			}
		}
	}
	sink := func(name string) string {
		return fmt.Sprintf("sinks:\n  - name: %s\n    url: https://%s.example/hook\n    secret: %s\n", name, name, sinkSecret)
	}
	notify := fmt.Sprintf("allowNotify: [hooks.example]\nnotifySecret: %s\n", notifySecret)

	write(sink("a"))
	live, err := Open(file)
	if err != nil {
		t.Fatal(err)
	}
	var counted []string
	reload := func() { live.reload(slog.New(slog.DiscardHandler), func(r string) { counted = append(counted, r) }) }
	sinks := func() string {
		var names []string
		for _, s := range live.Current().Sinks {
			names = append(names, s.Name)
		}
		return strings.Join(names, ",")
	}
	const hook = "https://hooks.example/x"

	steps := []struct {
		name      string
		change    func()
		sinks     string
		notifyOK  bool
		counted   []string
		refusedAs string
	}{
		{name: "as started", change: func() {}, sinks: "a", refusedAs: "not enabled", counted: nil},
		{name: "unchanged: nothing read twice counts", change: reload, sinks: "a", refusedAs: "not enabled"},
		{name: "a valid change is applied", change: func() { write(sink("b") + notify); reload() }, sinks: "b", notifyOK: true, counted: []string{"applied"}},
		{name: "an invalid change keeps what is in force", change: func() { write("sinks: [{name: b}]\n"); reload() }, sinks: "b", notifyOK: true, counted: []string{"applied", "invalid"}},
		{name: "and is counted once", change: reload, sinks: "b", notifyOK: true, counted: []string{"applied", "invalid"}},
		{name: "a missing file keeps it too", change: func() { os.Remove(filepath.Join(dir, "..data")); reload() }, sinks: "b", notifyOK: true, counted: []string{"applied", "invalid"}},
		{name: "back to what is in force: nothing to apply", change: func() { write(sink("b") + notify); reload() }, sinks: "b", notifyOK: true, counted: []string{"applied", "invalid"}},
		{name: "allowNotify removed: notify URLs refused again", change: func() { write(sink("a") + sink("c")[len("sinks:\n"):]); reload() }, sinks: "a,c", refusedAs: "not enabled", counted: []string{"applied", "invalid", "applied"}},
	}
	for _, st := range steps {
		st.change()
		if got := sinks(); got != st.sinks {
			t.Errorf("%s: sinks %q, want %q", st.name, got, st.sinks)
		}
		err := live.Admit([]string{hook})
		if st.notifyOK && err != nil || !st.notifyOK && (err == nil || !strings.Contains(err.Error(), st.refusedAs)) {
			t.Errorf("%s: Admit(%s) = %v", st.name, hook, err)
		}
		if !slices.Equal(counted, st.counted) {
			t.Errorf("%s: counted %v, want %v", st.name, counted, st.counted)
		}
	}
}

// TestDeliverFollowsReload: a sink added to the file while the deliverer
// runs gets the events that come after, on the new configuration's
// clients; the sink removed gets none of them.
func TestDeliverFollowsReload(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
	if _, err := s.OutboxCursor(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "webhooks.yaml")
	cfg := func(sink string) string {
		return fmt.Sprintf("sinks:\n  - name: %s\n    url: %s/%s\n    secret: %s\n", sink, rc.srv.URL, sink, sinkSecret)
	}
	if err := os.WriteFile(file, []byte(cfg("before")), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := Open(file)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	run(t, Options{Store: s, Live: live, Metrics: m, RootCAs: rc.roots(), MaxAge: time.Minute})
	experiment(t, s, "r1", history.StateSucceeded)
	waitFor(t, "r1 delivered", 20*time.Second, delivered(t, s, "r1"))

	if err := os.WriteFile(file, []byte(cfg("after")), 0o600); err != nil {
		t.Fatal(err)
	}
	live.reload(slog.New(slog.DiscardHandler), func(r string) { m.Webhook.ConfigReloads.WithLabelValues(r).Inc() })
	experiment(t, s, "r2", history.StateSucceeded)
	waitFor(t, "r2 delivered", 20*time.Second, delivered(t, s, "r2"))
	var paths []string
	for _, r := range rc.requests() {
		paths = append(paths, r.path)
	}
	if want := []string{"/before", "/after"}; !slices.Equal(paths, want) {
		t.Errorf("the receiver got %v, want %v: r1 to the sink before the change, r2 to the one after", paths, want)
	}
}

// delivered: experiment id has one delivery, and it is delivered.
func delivered(t testing.TB, s history.Store, id string) func() bool {
	return func() bool {
		ds, err := s.Deliveries(testCtx(t), id)
		return err == nil && len(ds) == 1 && ds[0].State == history.DeliveryDelivered
	}
}

// TestReloadGivesUpRemovedTarget: a delivery still being retried to a
// target that a reload removes (a sink, or the allowNotify entry of a
// notify URL) is given up at its next attempt, saying why, and the target
// gets no request after that; the sink kept is served.
func TestReloadGivesUpRemovedTarget(t *testing.T) {
	rc := newReceiver(t)
	host := strings.TrimPrefix(rc.srv.URL, "https://")
	rc.setAnswer(func(path string) int {
		if strings.HasSuffix(path, "gone") {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	sinks := func(names ...string) string {
		var b strings.Builder
		b.WriteString("sinks:\n")
		for _, name := range names {
			fmt.Fprintf(&b, "  - name: %s\n    url: %s/%s\n    secret: %s\n", name, rc.srv.URL, name, sinkSecret)
		}
		return b.String()
	}
	allow := func(host string) string {
		return fmt.Sprintf("allowNotify: [%q]\nnotifySecret: %s\n", host, notifySecret)
	}
	for _, tt := range []struct {
		name          string
		before, after string
		notify        []string
		target, path  string // the delivery given up, and where it went
		why           string
	}{
		{
			name: "sink removed", before: sinks("kept", "gone"), after: sinks("kept"),
			target: "gone", path: "/gone", why: `sink "gone" is no longer configured`,
		},
		{
			name: "notify host no longer allowed", before: sinks("kept") + allow(host), after: sinks("kept") + allow("hooks.example"),
			notify: []string{rc.srv.URL + "/notify-gone"}, target: rc.srv.URL + "/notify-gone", path: "/notify-gone",
			why: "no longer allowed: " + rc.srv.URL + " is not allowed for notify URLs; allowNotify admits hooks.example",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, filepath.Join(t.TempDir(), "history.db"))
			if _, err := s.OutboxCursor(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "webhooks.yaml")
			if err := os.WriteFile(file, []byte(tt.before), 0o600); err != nil {
				t.Fatal(err)
			}
			live, err := Open(file)
			if err != nil {
				t.Fatal(err)
			}
			m := metrics.New()
			stop := run(t, Options{Store: s, Live: live, Metrics: m, RootCAs: rc.roots(), MaxAge: time.Hour})
			defer stop()
			experiment(t, s, "r1", history.StateSucceeded, tt.notify...)
			byTarget := func() map[string]history.Delivery {
				ds, err := s.Deliveries(testCtx(t), "r1")
				if err != nil {
					t.Fatal(err)
				}
				out := map[string]history.Delivery{}
				for _, d := range ds {
					out[d.Target] = d
				}
				return out
			}
			waitFor(t, "r1 delivered to kept and retried to "+tt.target, 20*time.Second, func() bool {
				ds := byTarget()
				return ds["kept"].State == history.DeliveryDelivered &&
					ds[tt.target].State == history.DeliveryPending && ds[tt.target].Attempts >= 2
			})

			if err := os.WriteFile(file, []byte(tt.after), 0o600); err != nil {
				t.Fatal(err)
			}
			live.reload(slog.New(slog.DiscardHandler), func(r string) { m.Webhook.ConfigReloads.WithLabelValues(r).Inc() })
			waitFor(t, "the delivery to "+tt.target+" given up", 20*time.Second, func() bool {
				return byTarget()[tt.target].State == history.DeliveryFailed
			})
			if d := byTarget()[tt.target]; !strings.Contains(d.LastError, tt.why) {
				t.Errorf("given-up delivery's error %q; want it to say %q", d.LastError, tt.why)
			}
			sent := func() int {
				n := 0
				for _, r := range rc.requests() {
					if r.path == tt.path {
						n++
					}
				}
				return n
			}
			before := sent()
			// Many times the retry pause (at most 80 ms here): a delivery
			// still retried would have reached the receiver again.
			time.Sleep(500 * time.Millisecond)
			if after := sent(); after != before {
				t.Errorf("%s got %d more requests after its delivery was given up", tt.path, after-before)
			}
		})
	}
}
