package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/apitest"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func TestSubmitToAQueue(t *testing.T) {
	srv := apitest.Server(t).URL
	// The test backend has no queues: its refusal reaches the user.
	code, _, errs := run(t, srv, `{"id": "cli-q"}`, nil, "submit", "-f", "-", "--queue", "team-a")
	if code != ExitError || !strings.Contains(errs, "queues are not enabled") {
		t.Errorf("submit --queue = %d %q; want exit 1 naming the refusal", code, errs)
	}
}

func TestQueueColumns(t *testing.T) {
	pos := int32(3)
	eta := time.Now().Add(2*time.Minute + 10*time.Second)
	for _, tt := range []struct {
		q             *wire.Queue
		queue, wanted string
	}{
		{nil, "-", "-"},
		{&wire.Queue{Name: "team-a"}, "team-a", "-"},
		{&wire.Queue{Name: "team-a", Position: &pos}, "team-a", "3"},
		{&wire.Queue{Name: "team-a", Position: &pos, ETA: &eta}, "team-a", "3 (~2m10s)"},
	} {
		q, p := queueColumns(tt.q)
		if q != tt.queue || p != tt.wanted {
			t.Errorf("queueColumns(%+v) = %q, %q; want %q, %q", tt.q, q, p, tt.queue, tt.wanted)
		}
	}
}

func TestSubmitWithNotify(t *testing.T) {
	srv := apitest.Server(t).URL
	// The test backend has no webhooks: its refusal reaches the user, and
	// nothing is created.
	code, _, errs := run(t, srv, `{"id": "cli-n"}`, nil, "submit", "-f", "-", "--notify", "https://hooks.example/x")
	if code != ExitError || !strings.Contains(errs, "400") {
		t.Errorf("submit --notify = %d %q; want exit 1 with the 400", code, errs)
	}
	if code, _, _ := run(t, srv, "", nil, "get", "cli-n"); code != ExitError {
		t.Errorf("get after a refused submit = %d; want 1 (nothing created)", code)
	}
}
