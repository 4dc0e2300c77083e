package postgres

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParsePidFile(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want pidFile
	}{
		{"ready", "4242\n/tmp/x/data\n1700000000\n5432\n/tmp/x/run\n\n  5432001         0\nready   \n", pidFile{4242, "ready"}},
		{"starting", "17\n/d\n1\n5432\n/r\n\n  0 0\nstarting\n", pidFile{17, "starting"}},
		{"not yet complete", "17\n/d\n", pidFile{pid: 17}},
		{"empty", "", pidFile{}},
		{"garbage", "x\ny", pidFile{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parsePidFile([]byte(tt.in)); got != tt.want {
				t.Errorf("parsePidFile = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in        string
		comm      string
		state     byte
		ppid      int
		wantParse bool
	}{
		{"123 (postgres) S 1 123 123 0 -1", "postgres", 'S', 1, true},
		{"9 (a (b) c) Z 42 9 9", "a (b) c", 'Z', 42, true},
		{"9 postgres S 1", "", 0, 0, false},
		{"9 (x)", "", 0, 0, false},
	}
	for _, tt := range tests {
		comm, state, ppid, ok := parseStat([]byte(tt.in))
		if comm != tt.comm || state != tt.state || ppid != tt.ppid || ok != tt.wantParse {
			t.Errorf("parseStat(%q) = %q %c %d %v", tt.in, comm, state, ppid, ok)
		}
	}
}

func TestDisableMainCluster(t *testing.T) {
	const added = "# gmini: test servers only, no system-wide cluster\ncreate_main_cluster = false\n"
	tests := []struct {
		name   string
		before *string // nil: no file
		want   string
	}{
		{"no file yet", nil, added},
		{"Debian's default, commented out", ptr("ssl = on\n#create_main_cluster = true\n"), "ssl = on\n#create_main_cluster = true\n" + added},
		{"already off", ptr("create_main_cluster = false\n"), "create_main_cluster = false\n"},
		{"off, quoted, with a comment", ptr("create_main_cluster = 'off' # no\n"), "create_main_cluster = 'off' # no\n"},
		{"on", ptr("create_main_cluster = true\n"), "create_main_cluster = true\n" + added},
		{"off, then on again", ptr("create_main_cluster = false\ncreate_main_cluster = true\n"), "create_main_cluster = false\ncreate_main_cluster = true\n" + added},
		{"no final newline", ptr("ssl = on"), "ssl = on\n" + added},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "postgresql-common", "createcluster.conf")
			if tt.before != nil {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(*tt.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := disableMainCluster(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, string(got)); d != "" {
				t.Errorf("file after disableMainCluster (-want +got):\n%s", d)
			}
		})
	}
}

func TestCheckOwnDir(t *testing.T) {
	dir := t.TempDir()
	if err := checkOwnDir(filepath.Join(dir, "new")); err != nil {
		t.Errorf("a missing directory: %v", err)
	}
	for _, n := range []string{dataDir, runDir, logFile} {
		if err := os.Mkdir(filepath.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkOwnDir(dir); err != nil {
		t.Errorf("a server directory: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "thesis.tex"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkOwnDir(dir); err == nil || !strings.Contains(err.Error(), "thesis.tex") {
		t.Errorf("a directory with other files: %v, want an error naming the file", err)
	}
}

func TestDSN(t *testing.T) {
	s := &Server{dir: "/tmp/pg x", port: 5432}
	if got, want := s.DSN(), "postgres://postgres@/postgres?host=%2Ftmp%2Fpg+x%2Frun&port=5432&sslmode=disable"; got != want {
		t.Errorf("DSN = %s, want %s", got, want)
	}
	if got := s.TCPDSN(); got != "" {
		t.Errorf("TCPDSN without TCP = %q", got)
	}
	s.cfg.tcp = netip.MustParseAddrPort("198.18.0.2:5433")
	if got, want := s.TCPDSN(), "postgres://postgres@198.18.0.2:5433/postgres?sslmode=disable"; got != want {
		t.Errorf("TCPDSN = %s, want %s", got, want)
	}
}

// TestServer starts a real server, checks it answers on its socket and on
// TCP, restarts over a server a "crashed" run left in the same directory,
// and stops, leaving nothing behind.
func TestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Under /tmp, not t.TempDir(): the server's user must be able to
	// enter every parent.
	parent, err := os.MkdirTemp("", "gmini-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "srv")

	first, err := Start(ctx, dir, WithTCP(freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop(ctx)
	psql(t, first.DSN())
	psql(t, first.TCPDSN())
	firstPID := first.cmd.Process.Pid

	// A run that crashed left first running; the next Start in the same
	// directory must stop it, not fail on its lock files.
	second, err := Start(ctx, dir)
	if err != nil {
		t.Fatalf("Start over a leftover server: %v", err)
	}
	defer second.Stop(ctx)
	if isPostgres(firstPID) {
		t.Errorf("the leftover server %d still runs", firstPID)
	}
	psql(t, second.DSN())

	// Halt keeps the data; Resume serves it again.
	out, err := exec.Command(filepath.Join("/usr/lib/postgresql", Version, "bin", "psql"), second.DSN(), "-XAtc", "CREATE TABLE kept (x int)").CombinedOutput()
	if err != nil {
		t.Fatalf("create a table: %v: %s", err, out)
	}
	if err := second.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join("/usr/lib/postgresql", Version, "bin", "psql"), second.DSN(), "-XAtc", "SELECT 1").CombinedOutput(); err == nil {
		t.Errorf("a halted server answered: %s", out)
	}
	if err := second.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join("/usr/lib/postgresql", Version, "bin", "psql"), second.DSN(), "-XAtc", "SELECT count(*) FROM kept").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Errorf("after Resume the table is not there: %v: %s", err, out)
	}

	pid := second.cmd.Process.Pid
	kids := children(pid)
	if err := second.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for _, p := range append(kids, pid) {
		if isPostgres(p) {
			t.Errorf("postgres process %d left after Stop", p)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory left after Stop: %v", err)
	}
	if err := second.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func psql(t *testing.T, dsn string) {
	t.Helper()
	out, err := exec.Command(filepath.Join("/usr/lib/postgresql", Version, "bin", "psql"), dsn, "-XAtc", "SELECT 40 + 2").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Errorf("psql %s: %v: %s", dsn, err, out)
	}
}

func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return netip.MustParseAddrPort(l.Addr().String())
}

func ptr[T any](v T) *T { return &v }

// TestServerInNetNS runs the server inside a network namespace of its own,
// listening on a test-net address there, as an e2e cluster's node does.
func TestServerInNetNS(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("starts a PostgreSQL server in a network namespace (root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := "gmini-pgtest-" + strconv.Itoa(os.Getpid())
	addr := netip.MustParseAddrPort("198.19.255.1:5432")
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", addr.Addr().String() + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		if args[1] == "add" && args[0] == "netns" {
			t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
		}
	}
	parent, err := os.MkdirTemp("", "gmini-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Start(ctx, filepath.Join(parent, "srv"), WithNetNS(ns), WithTCP(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	// The socket is a file, reachable from any namespace; the TCP
	// address exists only inside ns.
	psql(t, s.DSN())
	out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, filepath.Join("/usr/lib/postgresql", Version, "bin", "psql"),
		s.TCPDSN(), "-XAtc", "SELECT inet_server_addr()").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != addr.Addr().String() {
		t.Errorf("psql over TCP inside %s: %v: %s", ns, err, out)
	}
	pid := s.cmd.Process.Pid
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if isPostgres(pid) {
		t.Errorf("server %d still runs after Stop", pid)
	}
}

// TestUnreachableDirectory: a directory the server's user cannot enter is
// refused with a message that says so, and nothing is left.
func TestUnreachableDirectory(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("runs initdb as the postgres user (root)")
	}
	parent := t.TempDir() // 0700, root's
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "srv")
	_, err := Start(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "cannot enter "+parent) {
		t.Errorf("Start = %v, want an error naming %s", err, parent)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory left behind: %v", err)
	}
}
