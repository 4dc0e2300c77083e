package client

// SubmitOption shapes a Submit.
type SubmitOption func(*submitRequest)

// submitRequest is the body of POST /experiment.
type submitRequest struct {
	Experiment any      `json:"experiment"`
	Queue      string   `json:"queue,omitempty"`
	Notify     []string `json:"notify,omitempty"`
}

// InQueue submits into the Kueue LocalQueue queue instead of the backend's
// default; the backend answers 400 for a queue that does not exist, and
// with --auth kubernetes 403 for one the caller may not use.
func InQueue(queue string) SubmitOption {
	return func(r *submitRequest) { r.Queue = queue }
}
