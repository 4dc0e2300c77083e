package cgroups

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestDirs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files []string // below root; a trailing / makes a directory
		links []string // symbolic links to cpu,cpuacct
		want  []string // below root
	}{
		{
			name:  "cgroup v2",
			files: []string{"cgroup.controllers", "cgroup.procs", "system.slice/", "gmini-x/"},
			want:  []string{"gmini-x"},
		},
		{
			name:  "cgroup v1",
			files: []string{"cpu,cpuacct/", "memory/", "pids/"},
			links: []string{"cpu", "cpuacct"},
			want:  []string{"cpu,cpuacct/gmini-x", "memory/gmini-x", "pids/gmini-x"},
		},
		{
			name:  "hybrid: v1 hierarchies and a unified one",
			files: []string{"memory/", "systemd/", "unified/"},
			want:  []string{"memory/gmini-x", "systemd/gmini-x", "unified/gmini-x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for _, f := range tt.files {
				var err error
				if p := filepath.Join(root, f); f[len(f)-1] == '/' {
					err = os.Mkdir(p, 0o755)
				} else {
					err = os.WriteFile(p, nil, 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, l := range tt.links {
				if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Dirs(root, "gmini-x")
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				got[i], _ = filepath.Rel(root, got[i])
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Dirs (-want +got):\n%s", d)
			}
		})
	}
}

// TestDirsThisHost checks the detection against the machine's own cgroup
// mount: Unified must agree with the file system type of Root.
func TestDirsThisHost(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(Root); err != nil {
		t.Skip("no cgroup file system")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(Root, &st); err != nil {
		t.Fatal(err)
	}
	if got, want := Unified(Root), st.Type == unix.CGROUP2_SUPER_MAGIC; got != want {
		t.Errorf("Unified(%s) = %v, but the file system type says %v", Root, got, want)
	}
	dirs, err := Dirs(Root, "gmini-x")
	if err != nil || len(dirs) == 0 {
		t.Errorf("Dirs(%s) = %v, %v; want at least one", Root, dirs, err)
	}
}

func TestCreateJoinProcsRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("changes the host's network and cgroups; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root; run as root or with -short")
	}
	const rel = "gmini-cgroups-test/system"
	if err := Create(rel); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove("gmini-cgroups-test") })
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := Join(rel, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, err := Procs("gmini-cgroups-test")
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("Procs = %v, %v; want it to hold %d", pids, err, cmd.Process.Pid)
	}
	if MemoryUsage("gmini-cgroups-test") == 0 {
		t.Error("no memory charged to the tree")
	}
	if err := Remove("gmini-cgroups-test"); err == nil {
		t.Error("Remove succeeded with a process inside")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := Remove("gmini-cgroups-test"); err != nil {
		t.Fatal(err)
	}
	if pids, _ := Procs("gmini-cgroups-test"); len(pids) != 0 {
		t.Errorf("Procs after Remove = %v", pids)
	}
	mounts, _ := Mounts()
	for _, m := range mounts {
		if _, err := os.Stat(m + "/gmini-cgroups-test"); err == nil {
			t.Errorf("%s/gmini-cgroups-test left", m)
		}
	}
}
