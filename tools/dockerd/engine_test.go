//go:build dockerd

// The engine for real: go test -tags dockerd ./dockerd/ (as root, with no
// other Docker engine answering). It installs docker.io if missing.
package dockerd

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/capdrop"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// TestEngine starts the engine, runs privileged containers from images the
// project builds (loaded with docker load, never pulled), execs into one
// with --privileged (what kind does to its nodes, and what fails without
// gmini-runc where the bounding set lacks a capability), stops the engine
// and finds nothing of it left.
func TestEngine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	e := New(l, log)
	if answers(ctx) {
		t.Fatalf("a Docker engine answers already (pid %d is the project's, 0 another's): stop it first (make docker-stop)", e.Running())
	}
	t.Cleanup(func() {
		if err := e.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})

	t0 := time.Now()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine started in %s", time.Since(t0).Round(time.Millisecond))
	if err := e.Start(ctx); err != nil {
		t.Fatalf("a second Start: %v", err)
	}

	dir := t.TempDir()
	for _, spec := range []images.Spec{images.Pause(l.Root, "dockerd-test"), {Name: "runner", Tag: "gmini-runner:dockerd-test", ModuleDir: l.Runner(), Package: "."}} {
		tar, err := images.Build(ctx, log, spec, dir)
		if err != nil {
			t.Fatal(err)
		}
		run(t, ctx, "docker", "load", "-i", tar)
	}
	out := run(t, ctx, "docker", "run", "--rm", "--privileged", "--network", KindNetwork, "gmini-runner:dockerd-test", `{"experiment":{"id":"privileged"}}`)
	if !strings.Contains(out, "Running Experiment: privileged") {
		t.Errorf("privileged runner printed %q", out)
	}
	run(t, ctx, "docker", "run", "-d", "--name", "gmini-dockerd-test", "--privileged", "gmini-pause:dockerd-test")
	run(t, ctx, "docker", "exec", "-d", "--privileged", "gmini-dockerd-test", "/pause")

	mask, err := capdrop.Bounding()
	if err != nil {
		t.Fatal(err)
	}
	if missing := capdrop.Missing(mask); len(missing) > 0 {
		// The control: runc itself, without the wrapper, cannot.
		run(t, ctx, "docker", "run", "-d", "--name", "gmini-dockerd-test-runc", "--runtime", "runc", "--privileged", "gmini-pause:dockerd-test")
		out, err := exec.CommandContext(ctx, "docker", "exec", "-d", "--privileged", "gmini-dockerd-test-runc", "/pause").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unable to apply caps") {
			t.Errorf("docker exec --privileged with plain runc, the bounding set lacking %v: %v %s; want 'unable to apply caps' (else the wrapper is not needed)", missing, err, out)
		}
	}
	// Nothing leaves this machine: the engine's rule is in place.
	if save := run(t, ctx, "iptables-save", "-t", "filter"); !strings.Contains(save, "-A DOCKER-USER -s "+Range+" ! -d "+testNet+" -j DROP") {
		t.Errorf("no DROP of traffic leaving %s:\n%s", testNet, save)
	}

	t1 := time.Now()
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine stopped in %s", time.Since(t1).Round(time.Millisecond))
	assertClean(t, e)
}

func assertClean(t *testing.T, e *Engine) {
	t.Helper()
	if answers(context.Background()) {
		t.Error("an engine still answers")
	}
	if links, _ := e.links(); len(links) > 0 {
		t.Errorf("links left: %v", links)
	}
	save, _ := exec.Command("iptables-save").Output()
	if strings.Contains(string(save), "DOCKER") || strings.Contains(string(save), Bridge) {
		t.Errorf("iptables rules left:\n%s", save)
	}
	if m, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(e.Dir)); len(m) > 0 {
		t.Errorf("%d mounts left under %s, e.g. %s", len(m), e.Dir, m[0].Mountpoint)
	}
	if pids, _ := cgroups.Procs(CgroupParent); len(pids) > 0 {
		t.Errorf("processes left in cgroup %s: %v", CgroupParent, pids)
	}
	for _, root := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(root + "/" + CgroupParent); err == nil {
			t.Errorf("cgroup %s/%s left", root, CgroupParent)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", e.Dir).Output(); len(out) > 0 {
		t.Errorf("processes naming %s left: %s", e.Dir, out)
	}
	for _, p := range []string{Socket, "/etc/docker/key.json", "/var/run/docker"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
}

func run(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
