// Package state is the one vocabulary of an experiment's states. Every
// source maps into it: a live Job (lifecycle), a record (history), and the
// API's filters accept exactly these names, whichever source answers.
package state

import "slices"

// The states, in the order messages list them.
const (
	// Submitted: claimed by a POST (history), its Job not seen yet; or its
	// Job exists but is held until the record says it may still run
	// (jobspec.HeldForSubmit).
	Submitted = "Submitted"
	// Queued: the Job waits in a Kueue LocalQueue, suspended until Kueue
	// admits it (then Pending, Running as any Job).
	Queued = "Queued"
	// Pending: the Job exists, no runner pod is ready yet.
	Pending = "Pending"
	// Running: a runner pod is ready.
	Running = "Running"
	// Succeeded, Failed, Cancelled: the outcome; final.
	Succeeded = "Succeeded"
	Failed    = "Failed"
	Cancelled = "Cancelled"
	// Suspended: the Job is suspended, by its template or a person: not
	// by a queue (Queued) nor by the backend's own hold (Submitted).
	Suspended = "Suspended"
	// Deleting: a DELETE is under way (a live Job only; its record says
	// Cancelled once it is stored).
	Deleting = "Deleting"
)

// ReasonRetrying is the reason of Pending after a failed attempt, while
// the next one starts: the one way an experiment goes back from Running
// to Pending (the history store keeps Running otherwise).
const ReasonRetrying = "Retrying"

var all = []string{Submitted, Queued, Pending, Running, Succeeded, Failed, Cancelled, Suspended, Deleting}

// All returns every state, in the order messages list them.
func All() []string { return slices.Clone(all) }

// Known reports whether s names a state.
func Known(s string) bool { return slices.Contains(all, s) }

// Final reports whether s is an outcome, which never changes once stored.
func Final(s string) bool { return s == Succeeded || s == Failed || s == Cancelled }
