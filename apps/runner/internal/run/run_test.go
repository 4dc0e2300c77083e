package run

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestMain(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"tutorial body", []string{`{"experiment": {"id": "aB3dE9xQ2mNpL7", "key": "k"}}`}, ExitOK, "Running Experiment: aB3dE9xQ2mNpL7\n", ""},
		{"extra fields", []string{`{"experiment": {"id": "e1", "params": {"lr": 0.1}}, "other": 1}`}, ExitOK, "Running Experiment: e1\n", ""},
		{"no argument", nil, ExitBadInput, "", "exactly one argument"},
		{"two arguments", []string{`{}`, `{}`}, ExitBadInput, "", "got 2"},
		{"not json", []string{`experiment`}, ExitBadInput, "", "not a JSON object"},
		{"truncated json", []string{`{"experiment": {"id": "e1"`}, ExitBadInput, "", "not a JSON object"},
		{"json array", []string{`[1,2]`}, ExitBadInput, "", "not a JSON object"},
		{"no experiment", []string{`{"id": "e1"}`}, ExitBadInput, "", `no "experiment"`},
		{"experiment null", []string{`{"experiment": null}`}, ExitBadInput, "", `no "experiment"`},
		{"experiment string", []string{`{"experiment": "e1"}`}, ExitBadInput, "", "must be a JSON object"},
		{"experiment array", []string{`{"experiment": [{"id": "e1"}]}`}, ExitBadInput, "", "must be a JSON object"},
		{"id missing", []string{`{"experiment": {"key": "k"}}`}, ExitBadInput, "", "is missing"},
		{"id empty", []string{`{"experiment": {"id": ""}}`}, ExitBadInput, "", "is empty"},
		{"id number", []string{`{"experiment": {"id": 42}}`}, ExitBadInput, "", "must be a string"},
		{"id null", []string{`{"experiment": {"id": null}}`}, ExitBadInput, "", "must be a string"},
		{"id object", []string{`{"experiment": {"id": {"x": 1}}}`}, ExitBadInput, "", "must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantStdout)
			}
			if tt.wantStderr == "" && stderr.Len() != 0 {
				t.Errorf("stderr = %q, want nothing", stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
			if n := strings.Count(stderr.String(), "\n"); tt.wantStderr != "" && n != 1 {
				t.Errorf("stderr has %d lines, want one clear line: %q", n, stderr.String())
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("closed") }

func TestMainWriteFailure(t *testing.T) {
	var stderr bytes.Buffer
	if code := Main([]string{`{"experiment":{"id":"e1"}}`}, failingWriter{}, &stderr); code != ExitFailed {
		t.Fatalf("exit code = %d, want %d", code, ExitFailed)
	}
}
