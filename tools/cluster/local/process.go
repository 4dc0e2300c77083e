package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/internal/logtail"
	"github.com/gmini-dev/gmini/tools/internal/proc"
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
	// A process that already exited gets no start time, and running()
	// then only checks that the PID is alive.
	ps, _ := proc.ReadStat(pid)
	st.Components[name] = &process{Argv: argv, PID: pid, StartTime: ps.StartTime}
	return st.write(p.stateFile())
}

// running reports whether the recorded process is still the one we started
// and has not exited.
func running(pr *process) bool {
	if pr == nil || pr.PID <= 0 {
		return false
	}
	st, err := proc.ReadStat(pr.PID)
	return err == nil && st.Alive() && (pr.StartTime == 0 || st.StartTime == pr.StartTime)
}

// stopProc sends SIGTERM, waits up to grace, then SIGKILL.
func stopProc(ctx context.Context, pr *process, grace time.Duration) error {
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

func waitGone(ctx context.Context, pr *process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !running(pr) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !running(pr)
}

// logTail returns the last n lines of a component's log, for errors that
// must explain themselves in CI output.
func logTail(p plan, component string, n int) string {
	return logtail.File(filepath.Join(p.logDir(), component+".log"), n)
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
