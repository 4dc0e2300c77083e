package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
)

// componentPath makes sure the components find iptables, runc, conntrack
// and the CNI tools whatever PATH the caller has.
const componentPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// startProc starts argv detached from the caller (own session, so the
// cluster outlives a `make up` process and ignores its Ctrl-C), appends its
// output to logs/<name>.log, puts it in the cluster's cgroup and records it
// in the state file.
func (c *Cluster) startProc(st *state, name string, argv []string) error {
	p := st.Plan
	logPath := filepath.Join(p.logDir(), name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))

	cmd := exec.Command(argv[0], argv[1:]...) // not CommandContext: it must outlive ctx
	cmd.Dir = p.RunDir
	cmd.Env = append(os.Environ(), componentPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		err := cmd.Wait() // reap, and say how it ended where people look
		if f, ferr := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
			fmt.Fprintf(f, "=== %s %s exited: %v\n", time.Now().Format(time.RFC3339), name, err)
			f.Close()
		}
		close(done)
	}()
	c.mu.Lock()
	c.exited[name] = done
	c.mu.Unlock()

	// Joining right after the fork is early enough: no component forks
	// children (containerd's shims, the kubelet's mounts) in its first
	// milliseconds.
	if err := cgroups.Join(p.systemCgroup(), pid); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("start %s: %w", name, err)
	}
	start, _ := procStartTime(pid)
	st.Components[name] = &proc{Argv: argv, PID: pid, StartTime: start}
	return st.write(p.stateFile())
}

// running reports whether the recorded process is still the one we started
// and has not exited.
func running(pr *proc) bool {
	if pr == nil || pr.PID <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pr.PID))
	if err != nil {
		return false
	}
	st, start, ok := parseStat(b)
	return ok && st != 'Z' && st != 'X' && (pr.StartTime == 0 || start == pr.StartTime)
}

// stopProc sends SIGTERM, waits up to grace, then SIGKILL.
func stopProc(ctx context.Context, pr *proc, grace time.Duration) error {
	if !running(pr) {
		return nil
	}
	if grace > 0 {
		_ = syscall.Kill(pr.PID, syscall.SIGTERM)
		if waitGone(ctx, pr, grace) {
			return nil
		}
	}
	_ = syscall.Kill(pr.PID, syscall.SIGKILL)
	if waitGone(ctx, pr, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("process %d (%s) survived SIGKILL", pr.PID, filepath.Base(pr.Argv[len(pr.Argv)-1]))
}

func waitGone(ctx context.Context, pr *proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !running(pr) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !running(pr)
}

func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, start, ok := parseStat(b)
	if !ok {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return start, nil
}

// parseStat returns the state and start time (field 22) of /proc/<pid>/stat;
// the command name in parentheses may hold spaces, so fields count from
// the last ')'.
func parseStat(b []byte) (state byte, start uint64, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], start, true
}

// logTail returns the last n lines of a component's log, for errors that
// must explain themselves in CI output.
func logTail(p plan, component string, n int) string {
	b, err := os.ReadFile(filepath.Join(p.logDir(), component+".log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// withLog appends the tail of each named component's log to err.
func withLog(p plan, err error, components ...string) error {
	if err == nil {
		return nil
	}
	var b strings.Builder
	for _, comp := range components {
		fmt.Fprintf(&b, "\n--- last 40 lines of %s ---\n%s", filepath.Join(p.logDir(), comp+".log"), logTail(p, comp, 40))
	}
	return fmt.Errorf("%w%s", err, b.String())
}

var errExited = errors.New("exited")
