// Package lease holds the timings of the Lease the backend's replicas
// compete for to record history (client-go leader election), and the
// longest hand-over they allow. It is exported so that the e2e suite bounds
// a hand-over with the numbers the backend runs with, not a copy of them.
package lease

import (
	"time"

	"k8s.io/client-go/tools/leaderelection"
)

const (
	// Duration is how long a candidate waits, from when it last saw the
	// Lease change, before it takes the Lease over.
	Duration = 15 * time.Second
	// RenewDeadline is how long a leader keeps trying to renew before it
	// gives up leading: the settings' own allowance for a slow API server.
	RenewDeadline = 10 * time.Second
	// RetryPeriod is the pause between a candidate's tries (and a leader's
	// renewals); client-go stretches a candidate's pause by up to
	// leaderelection.JitterFactor of it.
	RetryPeriod = 2 * time.Second
)

// MaxHandover is the longest a leader that dies without releasing the
// Lease (a crash, a lost node) stays unreplaced, API latency aside.
// client-go times the Lease on the candidate's clock: the candidate sees the
// dead leader's last renewal at its next try, at most one jittered
// RetryPeriod after it; it takes the Lease at its first try after Duration
// has passed from then, at most one more jittered RetryPeriod. A leader that
// stops gracefully releases the Lease, and is replaced within a try or two.
const MaxHandover = Duration + 2*time.Duration((1+leaderelection.JitterFactor)*float64(RetryPeriod))
