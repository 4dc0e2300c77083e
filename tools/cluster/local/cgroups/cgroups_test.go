package cgroups

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

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
