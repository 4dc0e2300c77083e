// Package run holds the runner's whole behaviour so that it can be tested
// without starting a process.
package run

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Exit codes. The Job template's podFailurePolicy maps ExitBadInput to
// FailJob: retrying a Job whose input cannot be parsed would only fail again.
const (
	ExitOK       = 0
	ExitFailed   = 1
	ExitBadInput = 2
)

// errBadInput marks errors caused by the argument rather than the environment.
var errBadInput = errors.New("bad input")

// Main runs the runner with the process arguments (without the program name)
// and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	id, err := parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "runner: %v\n", err)
		if errors.Is(err, errBadInput) {
			return ExitBadInput
		}
		return ExitFailed
	}
	if _, err := fmt.Fprintf(stdout, "Running Experiment: %s\n", id); err != nil {
		fmt.Fprintf(stderr, "runner: write output: %v\n", err)
		return ExitFailed
	}
	return ExitOK
}

// parse extracts experiment.id from the single JSON argument.
func parse(args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%w: want exactly one argument, the experiment JSON ({\"experiment\": {\"id\": ...}}), got %d", errBadInput, len(args))
	}
	var body struct {
		Experiment json.RawMessage `json:"experiment"`
	}
	if err := json.Unmarshal([]byte(args[0]), &body); err != nil {
		return "", fmt.Errorf("%w: argument is not a JSON object: %v", errBadInput, err)
	}
	raw := bytes.TrimSpace(body.Experiment)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", fmt.Errorf("%w: no \"experiment\" object in the argument", errBadInput)
	}
	if raw[0] != '{' {
		return "", fmt.Errorf("%w: \"experiment\" must be a JSON object", errBadInput)
	}
	var exp map[string]json.RawMessage
	if err := json.Unmarshal(raw, &exp); err != nil {
		return "", fmt.Errorf("%w: \"experiment\": %v", errBadInput, err)
	}
	rawID, ok := exp["id"]
	if !ok {
		return "", fmt.Errorf("%w: \"experiment.id\" is missing", errBadInput)
	}
	var id string
	if err := json.Unmarshal(rawID, &id); err != nil || bytes.Equal(bytes.TrimSpace(rawID), []byte("null")) {
		return "", fmt.Errorf("%w: \"experiment.id\" must be a string, got %s", errBadInput, rawID)
	}
	if id == "" {
		return "", fmt.Errorf("%w: \"experiment.id\" is empty", errBadInput)
	}
	return id, nil
}
