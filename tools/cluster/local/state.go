package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// state is what a later process needs to find and stop the cluster.
type state struct {
	Plan       plan                `json:"plan"`
	KubeBinary string              `json:"kubeBinary"`
	NoNode     bool                `json:"noNode"`
	Components map[string]*process `json:"components"`
}

// process is one started component. Argv lets StartComponent restart it;
// StartTime (from /proc/<pid>/stat) guards against a recycled PID.
type process struct {
	Argv      []string `json:"argv"`
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"`
}

func readState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", path, err)
	}
	if s.Components == nil {
		s.Components = map[string]*process{}
	}
	return &s, nil
}

// write replaces the file atomically so a crash never leaves half a state.
func (s *state) write(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
