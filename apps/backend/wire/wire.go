// Package wire is the JSON the backend's HTTP API speaks: the handler
// answers with these types and the Go client (package client) decodes
// them, so the two cannot drift apart.
package wire

import "time"

// Submission is the answer to POST /experiment.
type Submission struct {
	ID        string `json:"id"`
	Job       string `json:"job"`
	Namespace string `json:"namespace"`
	// Created is true when this request made the Job (201); false when
	// the same experiment was submitted before (200).
	Created bool `json:"created"`
	// State and Source say, for an experiment that had finished, that it
	// was not run again and how it ended.
	State  string `json:"state,omitempty"`
	Source string `json:"source"`
	// Status and Logs are the paths of the experiment's status and output.
	Status string `json:"status"`
	Logs   string `json:"logs"`
}

// Status is an experiment's status: GET /experiments/{id}, and each item
// of GET /experiments.
type Status struct {
	ID          string     `json:"id"`
	Job         string     `json:"job"`
	Namespace   string     `json:"namespace"`
	State       string     `json:"state"`
	Reason      string     `json:"reason,omitempty"`
	Message     string     `json:"message,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	StartedAt   *time.Time `json:"startedAt,omitempty"`
	CompletedAt *time.Time `json:"completedAt,omitempty"`
	// *PodCounts are the Job's; a status read from history has none, and
	// JSON then leaves the fields out rather than say 0.
	*PodCounts
	// ExitCode is the runner's, kept in the history record; a live Job's
	// status has none (its /logs name each attempt's exit code).
	ExitCode *int32 `json:"exitCode,omitempty"`
	// SubmittedBy is who submitted the experiment, when the backend
	// authenticates its clients.
	SubmittedBy string `json:"submittedBy,omitempty"`
	// Queue is the Kueue queue its Job is under, if any.
	Queue *Queue `json:"queue,omitempty"`
	// Set is the experiment set it was submitted in (POST
	// /experiment-sets), if any.
	Set string `json:"set,omitempty"`
	// Source says where the answer comes from: the live Job ("job"), or
	// the history record once the Job is gone ("history").
	Source string `json:"source"`
	// Deliveries are its webhook deliveries (GET /experiments/{id} only,
	// with history on), oldest first.
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// PodCounts count a Job's pods, as its status does.
type PodCounts struct {
	Active    int32 `json:"active"`
	Succeeded int32 `json:"succeeded"`
	Failed    int32 `json:"failed"`
}

// Page is the answer to GET /experiments.
type Page struct {
	Items []Status `json:"items"`
	// Continue, passed back as ?continue=, fetches the next page; absent
	// on the last one.
	Continue string `json:"continue,omitempty"`
}

// Cancellation is the answer to DELETE /experiments/{id}.
type Cancellation struct {
	ID  string `json:"id"`
	Job string `json:"job"`
	// Deleted is false when there was no Job left to delete; State then
	// is the recorded outcome.
	Deleted bool   `json:"deleted"`
	State   string `json:"state"`
}

// Error is the body of every error the API answers.
type Error struct {
	Error string `json:"error"`
}

// LogEnd is the data of the `done` event that ends an SSE log follow
// (GET /experiments/{id}/logs?follow=true): how the experiment ended, as
// far as the follow saw it.
type LogEnd struct {
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	ExitCode *int32 `json:"exitCode,omitempty"`
	// Source is "job" when the live Job ended the follow, "history" when
	// the record did.
	Source string `json:"source"`
}
