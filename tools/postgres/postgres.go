// Package postgres starts and stops a throwaway PostgreSQL server from
// Debian's packages, for tests: initdb into a directory of its own, the
// server on a unix socket in that directory (and, if asked, on one TCP
// address, possibly inside a network namespace), then a fast shutdown and
// the directory removed. Nothing is registered with the system: no cluster
// in /etc/postgresql, no service, and installing the package creates none.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gmini-dev/gmini/tools/internal/logtail"
	"github.com/gmini-dev/gmini/tools/internal/proc"
)

// Version is the PostgreSQL major version of Debian 12, whose binaries
// live in /usr/lib/postgresql/<Version>/bin.
const Version = "15"

// Superuser is the role initdb creates; local connections need no
// password.
const Superuser = "postgres"

// The layout of a server directory: Start refuses a directory holding
// anything else, since Stop removes it whole.
const (
	dataDir = "data"
	runDir  = "run" // the unix socket
	logFile = "postgres.log"
)

const (
	readyTimeout = 60 * time.Second
	// stopGrace is how long a fast shutdown (SIGINT) may take before
	// SIGKILL: it rolls back open transactions and writes a checkpoint.
	stopGrace = 15 * time.Second
)

// Option configures Start.
type Option func(*config)

type config struct {
	bin      string
	tcp      netip.AddrPort
	clients  []string
	netns    string
	settings [][2]string
	log      *slog.Logger
}

// WithTCP makes the server also listen on addr, e.g. 198.18.0.2:5432, with
// trust authentication for the clients WithTrustedClients names (by
// default the subnets addr's host is directly connected to).
func WithTCP(addr netip.AddrPort) Option { return func(c *config) { c.tcp = addr } }

// WithTrustedClients lists the client networks that may connect over TCP
// without a password.
func WithTrustedClients(prefixes ...netip.Prefix) Option {
	return func(c *config) {
		c.clients = c.clients[:0]
		for _, p := range prefixes {
			c.clients = append(c.clients, p.Masked().String())
		}
	}
}

// WithNetNS runs the server inside the network namespace
// /run/netns/<name> (nsenter --net), so that its TCP address is one of the
// namespace's. It needs root.
func WithNetNS(name string) Option { return func(c *config) { c.netns = name } }

// WithSetting passes a server setting (postgres -c name=value), e.g.
// fsync=off for a server whose data does not matter even across a crash.
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// WithLogger receives progress messages.
func WithLogger(log *slog.Logger) Option { return func(c *config) { c.log = log } }

// withBinDir replaces Debian's binaries (tests).
func withBinDir(dir string) Option { return func(c *config) { c.bin = dir } }

// Server is a running PostgreSQL server.
type Server struct {
	dir  string
	cfg  config
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the postmaster exited

	stopOnce sync.Once
	stopErr  error
}

// Start makes dir (it must be missing, empty, or a server directory of an
// earlier Start, whose server, if a crashed run left it running, is stopped
// first), creates a database cluster in it and starts the server. It
// returns once the server accepts connections. On error nothing is left
// running and dir is removed.
func Start(ctx context.Context, dir string, opts ...Option) (_ *Server, err error) {
	cfg := config{bin: filepath.Join("/usr/lib/postgresql", Version, "bin"), clients: []string{"samenet"}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Server{dir: dir, cfg: cfg, port: 5432}
	if cfg.tcp.IsValid() {
		s.port = int(cfg.tcp.Port())
	}
	// The socket path has a limit of 107 bytes.
	if sock := s.socketPath(); len(sock) > 100 {
		return nil, fmt.Errorf("postgres: socket path %s is too long for a unix socket; use a shorter directory", sock)
	}
	if cfg.netns != "" && os.Geteuid() != 0 {
		return nil, fmt.Errorf("postgres: a server in network namespace %s needs root", cfg.netns)
	}
	if cfg.bin == filepath.Join("/usr/lib/postgresql", Version, "bin") {
		if err := EnsureInstalled(ctx, cfg.log); err != nil {
			return nil, err
		}
	}
	if err := checkOwnDir(dir); err != nil {
		return nil, err
	}
	if err := stopLeftover(ctx, filepath.Join(dir, dataDir), cfg.log); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("postgres: clear %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			if serr := s.Stop(context.WithoutCancel(ctx)); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	owner, err := serverUser()
	if err != nil {
		return nil, err
	}
	if err := makeDirs(dir, owner); err != nil {
		return nil, err
	}
	if err := s.initdb(ctx, owner); err != nil {
		return nil, err
	}
	if err := s.start(owner); err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, s.LogPath(), logtail.File(s.LogPath(), 30))
	}
	cfg.log.Info("postgres started", "dir", dir, "pid", s.cmd.Process.Pid, "tcp", s.TCPDSN() != "")
	return s, nil
}

// DSN connects over the unix socket as the superuser to the database
// postgres.
func (s *Server) DSN() string {
	q := url.Values{"host": {filepath.Join(s.dir, runDir)}, "port": {strconv.Itoa(s.port)}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(Superuser), Path: "/postgres", RawQuery: q.Encode()}).String()
}

// TCPDSN connects over TCP, or is empty without WithTCP.
func (s *Server) TCPDSN() string {
	if !s.cfg.tcp.IsValid() {
		return ""
	}
	return (&url.URL{Scheme: "postgres", User: url.User(Superuser), Host: s.cfg.tcp.String(), Path: "/postgres", RawQuery: "sslmode=disable"}).String()
}

// Dir is the server directory.
func (s *Server) Dir() string { return s.dir }

// LogPath is the server's log file; Stop removes it with the directory.
func (s *Server) LogPath() string { return filepath.Join(s.dir, logFile) }

func (s *Server) socketPath() string {
	return filepath.Join(s.dir, runDir, ".s.PGSQL."+strconv.Itoa(s.port))
}

// Stop shuts the server down (SIGINT: fast shutdown, then SIGKILL after a
// grace period) and removes its directory. It is safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		var errs []error
		if s.cmd != nil && s.cmd.Process != nil {
			if err := stopPostmaster(ctx, s.cmd.Process.Pid, s.done, s.cfg.log); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("postgres: remove %s: %w", s.dir, err))
		}
		s.stopErr = errors.Join(errs...)
		if s.stopErr == nil && s.cmd != nil {
			s.cfg.log.Info("postgres stopped", "dir", s.dir)
		}
	})
	return s.stopErr
}

// Halt shuts the server down but keeps its data, as an outage would: clients
// are refused until Resume. For tests of a database that goes away.
func (s *Server) Halt(ctx context.Context) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("postgres: not started")
	}
	if err := stopPostmaster(ctx, s.cmd.Process.Pid, s.done, s.cfg.log); err != nil {
		return err
	}
	s.cfg.log.Info("postgres halted", "dir", s.dir)
	return nil
}

// Crash kills the server and every process of it at once (SIGKILL to its
// process group), as a crash of the database would: nothing is flushed, and
// commits made with synchronous_commit=off that were not yet written are
// lost. Resume starts it again and recovers from its WAL.
func (s *Server) Crash(ctx context.Context) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("postgres: not started")
	}
	pgid := s.cmd.Process.Pid // Setpgid: the postmaster leads its group
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("postgres: kill process group %d: %w", pgid, err)
	}
	// Every backend of the old server must be gone, or the new postmaster
	// finds their shared memory still attached and refuses to start.
	for syscall.Kill(-pgid, 0) == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: processes of group %d outlive SIGKILL: %w", pgid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	<-s.done
	s.cfg.log.Info("postgres crashed (killed)", "dir", s.dir, "pid", pgid)
	return nil
}

// Resume starts a halted server again on the same data and address.
func (s *Server) Resume(ctx context.Context) error {
	o, err := serverUser()
	if err != nil {
		return err
	}
	if err := s.start(o); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, s.LogPath(), logtail.File(s.LogPath(), 30))
	}
	s.cfg.log.Info("postgres resumed", "dir", s.dir, "pid", s.cmd.Process.Pid)
	return nil
}

// owner is the account the server runs as: postgres refuses to run as
// root, so root hands it to Debian's postgres system user.
type owner struct {
	uid, gid uint32
	switchTo bool // false: run as the caller
}

func serverUser() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("postgres: the postgres system user (made by Debian's postgresql-common): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return owner{}, fmt.Errorf("postgres: user postgres: %w", err)
	}
	return owner{uid: uint32(uid), gid: uint32(gid), switchTo: true}, nil
}

func (o owner) attr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if o.switchTo {
		a.Credential = &syscall.Credential{Uid: o.uid, Gid: o.gid}
	}
	return a
}

// checkOwnDir refuses a directory that holds anything Start did not make:
// Stop removes it whole, and a mistyped path must not cost someone's files.
func checkOwnDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	for _, e := range entries {
		if n := e.Name(); n != dataDir && n != runDir && n != logFile {
			return fmt.Errorf("postgres: %s holds %s, so it is not a server directory; give an empty or new one", dir, n)
		}
	}
	return nil
}

func makeDirs(dir string, o owner) error {
	for _, d := range []string{dir, filepath.Join(dir, runDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		if o.switchTo {
			if err := os.Chown(d, int(o.uid), int(o.gid)); err != nil {
				return fmt.Errorf("postgres: %w", err)
			}
		}
	}
	if o.switchTo {
		return reachable(filepath.Dir(dir), o)
	}
	return nil
}

// reachable checks that the server's user can walk down to its directory:
// a parent that only root may enter (a 0700 temporary directory) makes
// initdb fail with a bare "permission denied".
func reachable(dir string, o owner) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		if ok {
			switch {
			case st.Uid == o.uid && mode&0o100 != 0,
				st.Gid == o.gid && mode&0o010 != 0,
				mode&0o001 != 0:
			default:
				return fmt.Errorf("postgres: user postgres cannot enter %s (mode %v); put the server directory where it can, e.g. under /tmp", d, mode)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (s *Server) initdb(ctx context.Context, o owner) error {
	args := []string{"-D", filepath.Join(s.dir, dataDir), "-U", Superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"}
	cmd := exec.CommandContext(ctx, filepath.Join(s.cfg.bin, "initdb"), args...)
	cmd.SysProcAttr = o.attr()
	cmd.Dir = s.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("postgres: initdb %s: %w\n%s", s.dir, err, logtail.String(string(out), 20))
	}
	if s.cfg.tcp.IsValid() {
		// initdb trusts loopback only; a server on a namespace's
		// address serves clients of that network.
		var hba strings.Builder
		for _, c := range s.cfg.clients {
			fmt.Fprintf(&hba, "host all all %s trust\n", c)
		}
		f, err := os.OpenFile(filepath.Join(s.dir, dataDir, "pg_hba.conf"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		_, werr := f.WriteString(hba.String())
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("postgres: write pg_hba.conf: %w", err)
		}
	}
	return nil
}

// args is the server's command line.
func (s *Server) args() []string {
	listen := ""
	if s.cfg.tcp.IsValid() {
		listen = s.cfg.tcp.Addr().String()
	}
	args := []string{filepath.Join(s.cfg.bin, "postgres"),
		"-D", filepath.Join(s.dir, dataDir),
		"-p", strconv.Itoa(s.port),
		"-k", filepath.Join(s.dir, runDir),
		"-c", "listen_addresses=" + listen,
		// Logs go to the log file; Debian's defaults would send a
		// cluster's elsewhere.
		"-c", "logging_collector=off",
		"-c", "log_destination=stderr",
		"-c", "cluster_name=gmini-test",
	}
	for _, kv := range s.cfg.settings {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	return args
}

func (s *Server) start(o owner) error {
	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer logf.Close() // the server has its own copy
	argv := s.args()
	attr := o.attr()
	if s.cfg.netns != "" {
		// nsenter joins the namespace as root, then drops to the server's
		// user itself: joining needs a privilege the server must not have.
		ns := []string{"nsenter", "--net=" + filepath.Join("/run/netns", s.cfg.netns)}
		if o.switchTo {
			ns = append(ns, "--setgid="+strconv.Itoa(int(o.gid)), "--setuid="+strconv.Itoa(int(o.uid)))
		}
		argv = append(append(ns, "--"), argv...)
		attr = &syscall.SysProcAttr{}
	}
	// Its own process group keeps a terminal's Ctrl-C from reaching the
	// server: Stop shuts it down in order. If the caller dies, so does
	// the server (best effort: nsenter's change of user clears this).
	attr.Setpgid = true
	attr.Pdeathsig = syscall.SIGKILL
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = attr
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: start %s: %w", argv[0], err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	return nil
}

// waitReady waits until postmaster.pid says the server accepts
// connections: the signal pg_ctl waits for, read without connecting, which
// works as well when the server is inside a network namespace.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	pidFile := filepath.Join(s.dir, dataDir, "postmaster.pid")
	for {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pf := parsePidFile(b); pf.pid == s.cmd.Process.Pid && pf.status == "ready" {
				if _, err := os.Stat(s.socketPath()); err == nil {
					return nil
				}
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres: server exited during start-up (%v)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("postgres: not ready after %s: %w", readyTimeout, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pidFile is what postmaster.pid says: line 1 the postmaster's PID, line
// 8 its status ("starting", "ready", "stopping").
type pidFile struct {
	pid    int
	status string
}

func parsePidFile(b []byte) pidFile {
	lines := strings.Split(string(b), "\n")
	var pf pidFile
	if len(lines) > 0 {
		pf.pid, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	}
	if len(lines) > 7 {
		pf.status = strings.TrimSpace(lines[7])
	}
	return pf
}

// stopLeftover stops a server a crashed run left on data: its
// postmaster.pid names a live postgres process.
func stopLeftover(ctx context.Context, data string, log *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	pf := parsePidFile(b)
	if pf.pid <= 0 || !isPostgres(pf.pid) || !servesData(pf.pid, data) {
		return nil // a stale file: the process is gone or the PID reused
	}
	log.Info("stopping a postgres server left by an earlier run", "pid", pf.pid, "data", data)
	return stopPostmaster(ctx, pf.pid, nil, log)
}

// stopPostmaster sends SIGINT (fast shutdown: disconnect clients, roll
// back, checkpoint), waits stopGrace, then SIGKILLs the postmaster and the
// backends it forked, which a killed postmaster would leave behind.
func stopPostmaster(ctx context.Context, pid int, done <-chan struct{}, log *slog.Logger) error {
	gone := func() bool {
		if done != nil {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		return !isPostgres(pid)
	}
	if gone() {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGINT)
	if waitUntil(ctx, stopGrace, gone) {
		return nil
	}
	log.Warn("postgres did not shut down in time; killing it", "pid", pid, "grace", stopGrace)
	for _, child := range children(pid) {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitUntil(context.WithoutCancel(ctx), 5*time.Second, gone) {
		return nil
	}
	return fmt.Errorf("postgres: server %d survived SIGKILL", pid)
}

func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// isPostgres reports whether pid is a live (not zombie) postgres process.
func isPostgres(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.Alive() && (st.Comm == "postgres" || st.Comm == "postmaster")
}

// servesData reports whether postgres process pid was started on data, so
// that a reused PID never costs another server (the system's own cluster).
func servesData(pid int, data string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte("\x00-D\x00"+data+"\x00"))
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := proc.ReadStat(child); err == nil && st.PPID == pid {
			out = append(out, child)
		}
	}
	return out
}
