// Package logtail cuts the last lines out of a log or a command's output,
// so that an error can carry what explains it into CI output.
package logtail

import (
	"fmt"
	"os"
	"strings"
)

// Lines returns the last n lines of s; trailing newlines end the last
// line rather than add empty ones. Empty s has no lines.
func Lines(s string, n int) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" || n <= 0 {
		return nil
	}
	lines := strings.Split(s, "\n")
	return lines[max(len(lines)-n, 0):]
}

// String is Lines joined by newlines.
func String(s string, n int) string { return strings.Join(Lines(s, n), "\n") }

// File returns the last n lines of the file at path, or a note saying why
// there are none: callers put it into an error, which must not be lost
// because the log is missing too.
func File(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return String(string(b), n)
}
