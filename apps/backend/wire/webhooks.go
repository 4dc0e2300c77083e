package wire

import "time"

// Delivery is one webhook delivery of an experiment's state change, as GET
// /experiments/{id} shows it under "deliveries": a CloudEvent (ce-id =
// Event) sent to a sink of the deployment's configuration or to a URL the
// submission named in "notify".
type Delivery struct {
	// Kind is "sink" or "notify".
	Kind string `json:"kind"`
	// Target is the sink's name, or the notify URL without credentials,
	// query or fragment.
	Target string `json:"target"`
	// Event is the change's seq, the CloudEvent's id; EventState the
	// state it reports.
	Event      int64  `json:"event"`
	EventState string `json:"eventState,omitempty"`
	// State is pending (attempts go on), delivered (a 2xx answer) or
	// failed (given up, or refused with 410).
	State    string `json:"state"`
	Attempts int    `json:"attempts"`
	// LastCode is the last attempt's HTTP status (absent when it got no
	// answer); LastError what went wrong.
	LastCode  int    `json:"lastCode,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// NextAttempt is when a pending delivery is attempted next; DoneAt
	// when it was delivered or given up.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	DoneAt      *time.Time `json:"doneAt,omitempty"`
}
