package postgres

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
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

func TestWithoutMainCluster(t *testing.T) {
	t.Parallel()
	errInstall := errors.New("apt-get failed")
	tests := []struct {
		name       string
		existing   []string // directories below the configuration directory before
		installErr error
		packaged   bool     // the install puts a file into createcluster.d
		wantDirs   []string // directories after, "" being the configuration directory
	}{
		{name: "no postgresql-common yet", wantDirs: nil},
		{name: "postgresql-common without createcluster.d", existing: []string{""}, wantDirs: []string{""}},
		{name: "createcluster.d there", existing: []string{"", "createcluster.d"}, wantDirs: []string{"", "createcluster.d"}},
		{name: "the install fails", existing: []string{""}, installErr: errInstall, wantDirs: []string{""}},
		{name: "the install fills a directory we made", packaged: true, wantDirs: []string{"", "createcluster.d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conf := filepath.Join(t.TempDir(), "postgresql-common")
			for _, d := range tt.existing {
				if err := os.MkdirAll(filepath.Join(conf, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			err := withoutMainCluster(conf, func() error {
				if got := mainClusterSetting(t, conf); got != "off" {
					t.Errorf("during the install create_main_cluster = %q, want off", got)
				}
				if tt.packaged {
					return os.WriteFile(filepath.Join(conf, "createcluster.d", "packaged.conf"), nil, 0o644)
				}
				return tt.installErr
			})
			if !errors.Is(err, tt.installErr) || (err != nil) != (tt.installErr != nil) {
				t.Errorf("error = %v, want %v", err, tt.installErr)
			}
			var dirs []string
			_ = filepath.WalkDir(conf, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					rel, _ := filepath.Rel(conf, p)
					dirs = append(dirs, strings.TrimPrefix(rel, "."))
				}
				return nil
			})
			if d := cmp.Diff(tt.wantDirs, dirs); d != "" {
				t.Errorf("directories after (-want +got):\n%s", d)
			}
			if _, err := os.Stat(filepath.Join(conf, "createcluster.d", dropIn)); err == nil {
				t.Errorf("%s left", dropIn)
			}
		})
	}
}

// mainClusterSetting asks postgresql-common's own pg_conftool, as the
// server package's postinst does, what its packaged createcluster.conf
// says once pointed at conf; without postgresql-common it reads the
// drop-in itself.
func mainClusterSetting(t *testing.T, conf string) string {
	t.Helper()
	const packaged = "/usr/share/postgresql-common/createcluster.conf"
	b, err := os.ReadFile(packaged)
	if _, lerr := exec.LookPath("pg_conftool"); err != nil || lerr != nil {
		b, err := os.ReadFile(filepath.Join(conf, "createcluster.d", dropIn))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\ncreate_main_cluster = false\n") {
			return "off"
		}
		return string(b)
	}
	main := filepath.Join(conf, "createcluster.conf")
	b = bytes.ReplaceAll(b, []byte("'/etc/postgresql-common/createcluster.d'"), []byte("'"+filepath.Join(conf, "createcluster.d")+"'"))
	if err := os.WriteFile(main, b, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(main)
	out, err := exec.Command("pg_conftool", main, "show", "-bs", "create_main_cluster").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_conftool: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestRemoveLegacyEdit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		before *string // nil: no file
		want   *string
	}{
		{"no file", nil, nil},
		{"Debian's default: untouched", ptr("ssl = on\n#create_main_cluster = true\n"), ptr("ssl = on\n#create_main_cluster = true\n")},
		{"gmini's line removed", ptr("ssl = on\n" + legacyEdit), ptr("ssl = on\n")},
		{"the host's own setting kept", ptr("create_main_cluster = false\n"), ptr("create_main_cluster = false\n")},
		{"in the middle, twice", ptr("a = 1\n" + legacyEdit + "b = 2\n" + legacyEdit), ptr("a = 1\nb = 2\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "createcluster.conf")
			if tt.before != nil {
				if err := os.WriteFile(path, []byte(*tt.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := removeLegacyEdit(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if tt.want == nil {
				if !os.IsNotExist(err) {
					t.Errorf("file after = %q, %v; want none", got, err)
				}
				return
			}
			if d := cmp.Diff(*tt.want, string(got)); d != "" {
				t.Errorf("file after removeLegacyEdit (-want +got):\n%s", d)
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
