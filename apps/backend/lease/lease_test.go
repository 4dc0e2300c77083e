package lease

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// TestClientGoAcceptsTheTimings builds a leader elector with the timings, so
// a change that client-go would refuse at start-up fails here first.
func TestClientGoAcceptsTheTimings(t *testing.T) {
	_, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          &resourcelock.LeaseLock{LockConfig: resourcelock.ResourceLockConfig{Identity: "test"}},
		LeaseDuration: Duration,
		RenewDeadline: RenewDeadline,
		RetryPeriod:   RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(_ context.Context) {},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatalf("client-go refuses the lease timings: %v", err)
	}
}

// TestMaxHandover pins the number README.md and docs/guarantees.md state
// (with the e2e suite's 10 s allowance, 33.8 s): a change of the timings
// fails here, so the documents change with them.
func TestMaxHandover(t *testing.T) {
	// 15 s, plus two pauses of 2 s stretched by up to 120 %.
	if want := 23800 * time.Millisecond; MaxHandover != want {
		t.Errorf("MaxHandover = %s, want %s", MaxHandover, want)
	}
}
