package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunInfoHeader(t *testing.T) {
	t.Parallel()
	i := runInfo{started: time.Date(2026, 12, 4, 14, 5, 0, 0, time.FixedZone("CET", 3600)),
		command: "cd tools && go run ./bench -n 10", commit: "abc123 with uncommitted changes",
		machine: "AMD EPYC, 2 CPUs", system: "Debian GNU/Linux 12 (bookworm), Linux 6.1.0"}
	want := "# gmini bench run\nstarted: 2026-12-04 13:05:00 UTC\ncommand: cd tools && go run ./bench -n 10\n" +
		"commit: abc123 with uncommitted changes\nmachine: AMD EPYC, 2 CPUs\nsystem: Debian GNU/Linux 12 (bookworm), Linux 6.1.0\n\n"
	if got := i.header(); got != want {
		t.Errorf("header() =\n%s\nwant\n%s", got, want)
	}
}

// TestOutNotWrittenForRefusedFlags: flags are checked before -out is
// created, so a mistyped command leaves no run file that looks like a run.
func TestOutNotWrittenForRefusedFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"concurrency", []string{"-concurrency", "0"}, "concurrency"},
		{"variant", []string{"-variants", "mysql"}, "variant"},
		{"rounds", []string{"-rounds", "0"}, "rounds"},
		{"only", []string{"-only", "sets,lists"}, "-only"},
		{"set-items", []string{"-only", "sets", "-set-items", "1001"}, "set-items"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "runs", "run.txt")
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"-out", path}, c.args...), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run(%v) = %v, want an error about %s", c.args, err, c.want)
			}
			if _, serr := os.Stat(path); serr == nil {
				t.Errorf("-out %s written for a refused command line", path)
			}
		})
	}
}
