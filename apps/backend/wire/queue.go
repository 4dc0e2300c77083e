package wire

import "time"

// Queue is where an experiment waits for Kueue to admit it, in the status
// of an experiment whose Job is under a LocalQueue. Name and ClusterQueue
// are there for any such Job; Position, Reason and ETA only while it is
// Queued, and each only when known.
type Queue struct {
	// Name is the LocalQueue.
	Name string `json:"name"`
	// ClusterQueue is the ClusterQueue behind it, whose quota admits.
	ClusterQueue string `json:"clusterQueue,omitempty"`
	// Position is Kueue's position in the LocalQueue, from its visibility
	// API, a few seconds old at most: 0 is admitted next.
	Position *int32 `json:"position,omitempty"`
	// Reason is why Kueue has not admitted it yet, in Kueue's words.
	Reason string `json:"reason,omitempty"`
	// ETA estimates when it will be admitted: now + (position+1) divided
	// by the LocalQueue's admissions per second over the last minutes.
	ETA *time.Time `json:"eta,omitempty"`
}
