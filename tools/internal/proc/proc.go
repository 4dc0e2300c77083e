// Package proc reads what the kernel reports about a process in
// /proc/<pid>/stat: the one place the tools parse that file.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat is the part of /proc/<pid>/stat the tools use.
type Stat struct {
	Comm  string // command name, without the parentheses
	State byte   // R, S, D, Z, X, ...
	PPID  int
	// UTime and STime are the CPU time spent in user and kernel mode, in
	// clock ticks.
	UTime, STime uint64
	// StartTime is when the process started, in clock ticks after boot;
	// with the PID it names one process even after the PID is reused.
	StartTime uint64
}

// userHZ is the clock tick of /proc's times: fixed at 100 for user space
// on Linux, whatever the kernel's own HZ.
const userHZ = 100

// ReadStat reads and parses /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	s, err := ParseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return s, nil
}

// ParseStat parses the contents of a /proc/<pid>/stat file. The command
// name may hold spaces and parentheses, so the fields after it count from
// the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("parse stat %q: no command name in parentheses", short(b))
	}
	// f[0] is field 3 (state) of proc(5), so field k is f[k-3].
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("parse stat %q: want at least 22 fields", short(b))
	}
	s := Stat{Comm: string(b[open+1 : end]), State: f[0][0]}
	var err error
	if s.PPID, err = strconv.Atoi(f[1]); err != nil {
		return Stat{}, fmt.Errorf("parse stat ppid: %w", err)
	}
	for _, u := range []struct {
		dst   *uint64
		field int
	}{{&s.UTime, 14}, {&s.STime, 15}, {&s.StartTime, 22}} {
		if *u.dst, err = strconv.ParseUint(f[u.field-3], 10, 64); err != nil {
			return Stat{}, fmt.Errorf("parse stat field %d: %w", u.field, err)
		}
	}
	return s, nil
}

// Alive reports whether the process still runs: a zombie has exited and
// only waits for its parent to reap it.
func (s Stat) Alive() bool { return s.State != 'Z' && s.State != 'X' }

// CPU is the process's user and system CPU time so far.
func (s Stat) CPU() time.Duration {
	return time.Duration(s.UTime+s.STime) * (time.Second / userHZ)
}

func short(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}
