package capdrop

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestMissing(t *testing.T) {
	t.Parallel()
	// This machine's CapBnd: all of 0-40 but CAP_SYS_RESOURCE (24).
	if got := Missing(0x000001fffeffffff); !slices.Equal(got, []string{"CAP_SYS_RESOURCE"}) {
		t.Errorf("Missing = %v", got)
	}
	if got := Missing(1<<41 - 1); len(got) != 0 {
		t.Errorf("Missing(all) = %v", got)
	}
}

func TestTargets(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name           string
		args           []string
		configs, procs []string
	}{
		{name: "containerd shim create",
			args:    []string{"--root", "/run/containerd/runc/moby", "--log", "/x/log.json", "--log-format", "json", "create", "--bundle", "/b/1", "--pid-file", "/b/1/init.pid", "abc"},
			configs: []string{"/b/1/config.json"}},
		{name: "systemd cgroup, -b", args: []string{"--systemd-cgroup", "run", "-b", "/b/2", "x"}, configs: []string{"/b/2/config.json"}},
		{name: "--bundle=", args: []string{"create", "--bundle=/b/3", "x"}, configs: []string{"/b/3/config.json"}},
		{name: "no bundle: cwd", args: []string{"create", "x"}, configs: []string{"/cwd/config.json"}},
		{name: "exec", args: []string{"--root", "/r", "exec", "--process", "/tmp/runc-process1", "--detach", "x"}, procs: []string{"/tmp/runc-process1"}},
		{name: "exec -p", args: []string{"exec", "-p", "/tmp/p", "x"}, procs: []string{"/tmp/p"}},
		{name: "other commands", args: []string{"--root", "/create", "state", "create"}},
		{name: "delete", args: []string{"delete", "--force", "x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			configs, procs := Targets(tt.args, "/cwd")
			if !slices.Equal(configs, tt.configs) || !slices.Equal(procs, tt.procs) {
				t.Errorf("Targets = %v, %v; want %v, %v", configs, procs, tt.configs, tt.procs)
			}
		})
	}
}

func TestFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	all := []any{"CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"args": []any{"/sbin/init"},
			"capabilities": map[string]any{
				"bounding": all, "effective": all, "permitted": all, "inheritable": all,
			},
		},
		"linux": map[string]any{"namespaces": []any{map[string]any{"type": "pid"}}},
	}
	data, _ := json.Marshal(spec)
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	changed, err := File(path, true, []string{"CAP_SYS_RESOURCE"})
	if err != nil || !changed {
		t.Fatalf("File = %v, %v", changed, err)
	}
	var got map[string]any
	data, _ = os.ReadFile(path)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	caps := got["process"].(map[string]any)["capabilities"].(map[string]any)
	for _, set := range []string{"bounding", "effective", "permitted", "inheritable"} {
		if l := caps[set].([]any); !slices.Equal(l, []any{"CAP_CHOWN", "CAP_SYS_ADMIN"}) {
			t.Errorf("%s = %v", set, l)
		}
	}
	if got["linux"] == nil || got["ociVersion"] != "1.0.2" {
		t.Errorf("other fields lost: %v", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// Nothing to drop: the file is left alone.
	if changed, err := File(path, true, []string{"CAP_SYS_RESOURCE"}); err != nil || changed {
		t.Errorf("second File = %v, %v", changed, err)
	}
	// An exec process file has the capabilities at the top.
	proc := filepath.Join(dir, "process.json")
	data, _ = json.Marshal(map[string]any{"args": []any{"sh"}, "capabilities": map[string]any{"bounding": all}})
	if err := os.WriteFile(proc, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := File(proc, false, []string{"CAP_SYS_RESOURCE"}); err != nil || !changed {
		t.Errorf("File(process) = %v, %v", changed, err)
	}
}
