// Package backendproc runs the real backend binary as a host process, for
// the suites and the benchmark that test it against a real API server
// without a node: built as shipped, started with the flags a test chooses,
// its output kept in one log file across restarts.
package backendproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/logtail"
	"github.com/gmini-dev/gmini/tools/internal/proc"
)

// Build compiles apps/backend as shipped (the main package the image holds,
// with the image's build flags) into the checkout's bin directory and
// returns the binary's path.
func Build(ctx context.Context, log *slog.Logger, l layout.Layout) (string, error) {
	t0 := time.Now()
	bin := l.Bin("backend")
	if err := images.GoBuild(ctx, l.Backend(), ".", bin, runtime.GOARCH); err != nil {
		return "", fmt.Errorf("build apps/backend: %w", err)
	}
	log.Info("backend built", "bin", bin, "elapsed", time.Since(t0).Round(time.Millisecond))
	return bin, nil
}

// Options say how to run the backend.
type Options struct {
	Binary string
	// Args are the backend's flags. Give --listen 127.0.0.1:0: the
	// process logs the port the kernel picked, which avoids racing anyone
	// for a fixed port.
	Args []string
	// LogPath receives the process's output, appended across restarts.
	LogPath string
	Log     *slog.Logger
	// NotReady makes Start return once the backend listens, without
	// waiting for /readyz: for tests of a backend that cannot be ready.
	NotReady bool
}

// Process is the backend binary as a child process.
type Process struct {
	opts Options

	mu        sync.Mutex
	cmd       *exec.Cmd
	url       string
	done      chan struct{} // closed when the process exited
	state     *os.ProcessState
	starts    int
	coldStart time.Duration
}

// New returns a process that Start runs.
func New(opts Options) *Process {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Process{opts: opts}
}

// listening matches the start-up line in both log formats.
var listening = regexp.MustCompile(`msg="backend listening" addr=(\S+)|"msg":"backend listening","addr":"([^"]+)"`)

// Start runs the backend and waits until /readyz answers 200 (or only
// until it listens, with Options.NotReady).
func (p *Process) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.state == nil {
		return errors.New("backend already running")
	}
	logf, err := os.OpenFile(p.opts.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open backend log: %w", err)
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	p.starts++
	fmt.Fprintf(logf, "==== start %d at %s: %s %s\n", p.starts, time.Now().Format(time.RFC3339Nano), p.opts.Binary, strings.Join(p.opts.Args, " "))
	cmd := exec.Command(p.opts.Binary, p.opts.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a timeout panic), so does the backend.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start backend: %w", err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.state, p.url = cmd, done, nil, ""
	go func() {
		_ = cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(done)
	}()

	var addr string
	err = wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		select {
		case <-done:
			return false, errors.New("backend exited during start-up")
		default:
		}
		data, err := os.ReadFile(p.opts.LogPath)
		if err != nil || int64(len(data)) < offset {
			return false, nil
		}
		if m := listening.FindSubmatch(data[offset:]); m != nil {
			addr = string(m[1]) + string(m[2])
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("backend did not log its address: %w\n%s", err, p.tail(20))
	}
	p.url = "http://" + addr
	if p.opts.NotReady {
		p.opts.Log.Info("backend listening", "url", p.url, "pid", cmd.Process.Pid)
		return nil
	}
	client := &http.Client{Timeout: 3 * time.Second}
	err = wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/readyz", nil)
		if err != nil {
			return false, err
		}
		res, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("backend %s not ready after a minute: %w\n%s", p.url, err, p.tail(20))
	}
	p.coldStart = time.Since(t0)
	p.opts.Log.Info("backend ready", "url", p.url, "pid", cmd.Process.Pid, "elapsed", p.coldStart.Round(time.Millisecond))
	return nil
}

// ColdStart is how long the last Start took from exec to the first
// /readyz 200.
func (p *Process) ColdStart() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.coldStart
}

// Signal sends sig to the running backend.
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.state != nil {
		return errors.New("backend not running")
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the process to exit and returns its exit code (-1 when a
// signal killed it).
func (p *Process) Wait(ctx context.Context) (int, error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return 0, errors.New("backend never started")
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for backend exit: %w", ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode(), nil
}

// Stop sends SIGTERM and waits; after 30 s it kills the process.
func (p *Process) Stop(ctx context.Context) (int, error) {
	if !p.Running() {
		return p.exitCode(), nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	code, err := p.Wait(wctx)
	if err != nil {
		_ = p.Signal(syscall.SIGKILL)
		code, _ = p.Wait(ctx)
		return code, fmt.Errorf("backend ignored SIGTERM for 30 s; killed: %w", err)
	}
	return code, nil
}

// Running reports whether the process is alive.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && p.state == nil
}

func (p *Process) exitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return 0
	}
	return p.state.ExitCode()
}

// URL is the base URL of the running backend.
func (p *Process) URL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.url
}

// PID is the running process's ID, 0 when none runs.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.state != nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// LogPath is the process's log file.
func (p *Process) LogPath() string { return p.opts.LogPath }

// LogTail returns the last n lines the backend wrote.
func (p *Process) LogTail(n int) string {
	if p == nil {
		return "(backend not started)"
	}
	return p.tail(n)
}

func (p *Process) tail(n int) string {
	data, err := os.ReadFile(p.opts.LogPath)
	if err != nil {
		return fmt.Sprintf("(no backend log: %v)", err)
	}
	lines := logtail.Lines(string(data), n)
	// A JSON log line can carry a whole request body; a few hundred
	// characters say which line it is.
	for i, l := range lines {
		if len(l) > 400 {
			lines[i] = l[:400] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// Memory is a process's resident memory in bytes.
type Memory struct {
	// RSS is all of it (VmRSS), Anon the part no file backs (RssAnon):
	// the heap and stacks. The rest is mostly the binary's own pages,
	// shared and given back to the kernel under pressure.
	RSS, Anon int64
}

// Memory reads the process's resident memory (zero if it is not running).
func (p *Process) Memory() Memory {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
	if err != nil {
		return Memory{}
	}
	var m Memory
	for _, l := range strings.Split(string(data), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok || (name != "VmRSS" && name != "RssAnon") {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		if name == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Anon = kb << 10
		}
	}
	return m
}

// RSS is the process's resident set size in bytes (0 if it is not running).
func (p *Process) RSS() int64 { return p.Memory().RSS }

// CPU is the process's user and system CPU time so far.
// It is 0 if the process is not running.
func (p *Process) CPU() time.Duration {
	st, err := proc.ReadStat(p.PID())
	if err != nil {
		return 0
	}
	return st.CPU()
}

// PeakRSS samples RSS every 20 ms until the returned stop is called, which
// returns the peak.
func (p *Process) PeakRSS() (stop func() int64) {
	peak := p.PeakMemory()
	return func() int64 { return peak().RSS }
}

// PeakMemory samples Memory every 20 ms until the returned stop is called,
// which returns the peak of each.
func (p *Process) PeakMemory() (stop func() Memory) {
	stopc := make(chan struct{})
	done := make(chan Memory, 1)
	go func() {
		var peak Memory
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			m := p.Memory()
			peak.RSS, peak.Anon = max(peak.RSS, m.RSS), max(peak.Anon, m.Anon)
			select {
			case <-stopc:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() Memory { close(stopc); return <-done }
}
