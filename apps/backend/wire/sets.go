package wire

import "encoding/json"

// MaxSetItems bounds the items of one POST /experiment-sets.
const MaxSetItems = 1000

// SetRequest is the body of POST /experiment-sets. Each item is exactly
// the body POST /experiment takes, {"experiment": {"id": ...}}, and is
// judged by the same rules.
type SetRequest struct {
	ID    string            `json:"id"`
	Items []json.RawMessage `json:"items"`
}

// Outcomes of a set's item. Each has the status code POST /experiment
// would have answered for the item alone.
const (
	// OutcomeCreated: its Job was made now (201).
	OutcomeCreated = "created"
	// OutcomeExisting: submitted before, in this set; nothing new (200).
	OutcomeExisting = "existing"
	// OutcomeConflict: the ID is taken, by another body or another set,
	// or the previous Job is still being deleted (409).
	OutcomeConflict = "conflict"
	// OutcomeInvalid: the item itself is wrong (400, or 413 when it is
	// over the single POST's body limit).
	OutcomeInvalid = "invalid"
	// OutcomeError: anything else (429, 502, 503, ...); Code says which,
	// and 429 and 503 are worth a retry of the set.
	OutcomeError = "error"
)

// SetItem is what became of one item of a set.
type SetItem struct {
	// Index is the item's position in the request, from 0.
	Index int `json:"index"`
	// ID is experiment.id, absent when the item has no valid one.
	ID      string `json:"id,omitempty"`
	Code    int    `json:"code"`
	Outcome string `json:"outcome"`
	Job     string `json:"job,omitempty"`
	// State and Source, as in Submission: for an experiment that had
	// finished, how it ended (from its history record).
	State  string `json:"state,omitempty"`
	Source string `json:"source,omitempty"`
	// Message says what went wrong, as the single POST's error would.
	Message string `json:"message,omitempty"`
}

// Failed reports whether the item is neither created nor existing.
func (i SetItem) Failed() bool {
	return i.Outcome != OutcomeCreated && i.Outcome != OutcomeExisting
}

// SetOutcomes count a set's items by outcome.
type SetOutcomes struct {
	Created  int `json:"created"`
	Existing int `json:"existing"`
	Conflict int `json:"conflict"`
	Invalid  int `json:"invalid"`
	Error    int `json:"error"`
}

// Failed is how many items were neither created nor existing.
func (o SetOutcomes) Failed() int { return o.Conflict + o.Invalid + o.Error }

// SetSubmission is the answer to POST /experiment-sets: every item, in
// request order, with its own outcome.
type SetSubmission struct {
	ID        string      `json:"id"`
	Namespace string      `json:"namespace"`
	Outcomes  SetOutcomes `json:"outcomes"`
	Items     []SetItem   `json:"items"`
	// Status is the path of the set's status.
	Status string `json:"status"`
}

// Set is the answer to GET /experiment-sets/{id}: the whole set's counts
// and one page of its experiments.
type Set struct {
	ID string `json:"id"`
	// Source says what the set was read from: the history records
	// ("history"), or without history the live Jobs ("job").
	Source string `json:"source"`
	// Total is the number of the set's experiments; Counts splits it by
	// state, with every state of the vocabulary present.
	Total  int            `json:"total"`
	Counts map[string]int `json:"counts"`
	// Items is one page (limit, continue, state as GET /experiments).
	Items []Status `json:"items"`
	// Continue, passed back as ?continue=, fetches the next page; absent
	// on the last one.
	Continue string `json:"continue,omitempty"`
}

// SetCancellation is the answer to DELETE /experiment-sets/{id}.
type SetCancellation struct {
	ID string `json:"id"`
	// Total is the number of the set's experiments found.
	Total int `json:"total"`
	// Cancelled were not finished and are cancelled now.
	Cancelled int `json:"cancelled"`
	// Finished had an outcome already, or were gone by the time of their
	// cancel: nothing to do.
	Finished int `json:"finished"`
	// Failed could not be cancelled now; Errors says why, each with the
	// code DELETE /experiments/{id} would have answered (409: retry).
	Failed int        `json:"failed"`
	Errors []SetError `json:"errors,omitempty"`
}

// SetError is an experiment of a set that a request could not act on.
type SetError struct {
	ID      string `json:"id"`
	Job     string `json:"job,omitempty"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}
