package wire

import "time"

// Event is one change of an experiment's state, as the status streams
// (GET /experiments/{id}/events, /experiment-sets/{id}/events, /events)
// send it in an SSE "state" event whose SSE id is Seq.
//
// Seq is the history store's: it increases with every change stored, it is
// the same whichever replica serves the stream, and it is what a client
// gives back as Last-Event-ID to get exactly the changes it missed.
type Event struct {
	Seq        int64  `json:"seq"`
	Experiment string `json:"experiment"`
	Set        string `json:"set,omitempty"`
	Submitter  string `json:"submitter,omitempty"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	// ExitCode is the runner's, once known.
	ExitCode *int32 `json:"exitCode,omitempty"`
	// Time is when the change was stored.
	Time time.Time `json:"time"`
}

// EventsDone is the data of the "done" event that ends a stream of one
// experiment (its final state) or of one set (every item final).
type EventsDone struct {
	// State is the experiment's final state; empty for a set.
	State string `json:"state,omitempty"`
	// Counts are a set's items by state; nil for an experiment.
	Counts map[string]int `json:"counts,omitempty"`
}

// Position is the data of a "position" event: where a Queued experiment
// waits in its LocalQueue. It is not a change of state and is not stored:
// it has no SSE id, is not replayed, and a stream sends it when the
// position first becomes known and each time it changes.
type Position struct {
	Experiment string `json:"experiment"`
	Queue
}

// SSE event names of the status streams.
const (
	// EventPosition carries a Position, on a stream of one experiment
	// while it is Queued.
	EventPosition = "position"
	// EventState carries an Event.
	EventState = "state"
	// EventDone carries EventsDone and ends the stream.
	EventDone = "done"
	// EventError carries {"error": "..."} and ends the stream: the client
	// was too slow, or the backend stops; it reconnects with Last-Event-ID.
	EventError = "error"
)
