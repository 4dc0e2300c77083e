package hostpkgs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestWithoutServiceStarts(t *testing.T) {
	t.Parallel()
	const hostPolicy = "#!/bin/sh\nexit 0\n"
	errInstall := errors.New("apt-get failed")
	tests := []struct {
		name       string
		before     string // "" : no policy-rc.d
		saved      string // "" : no file left by an interrupted run
		installErr error
		wantErr    bool
		wantRun    bool   // install was called
		after      string // "": none
		afterMode  os.FileMode
	}{
		{name: "no policy before: none after", wantRun: true},
		{name: "the host's policy is put back", before: hostPolicy, wantRun: true, after: hostPolicy, afterMode: 0o750},
		{name: "put back when the install fails", before: hostPolicy, installErr: errInstall, wantErr: true, wantRun: true, after: hostPolicy, afterMode: 0o750},
		{name: "removed when the install fails", installErr: errInstall, wantErr: true, wantRun: true},
		{name: "an interrupted run's saved policy is put back", before: denyAll, saved: hostPolicy, wantRun: true, after: hostPolicy, afterMode: 0o750},
		{name: "a saved file next to a foreign policy: touch nothing", before: hostPolicy, saved: "#!/bin/sh\nexit 1\n", wantErr: true, after: hostPolicy, afterMode: 0o750},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "policy-rc.d")
			if tt.before != "" {
				if err := os.WriteFile(path, []byte(tt.before), 0o750); err != nil {
					t.Fatal(err)
				}
			}
			if tt.saved != "" {
				if err := os.WriteFile(path+".gmini-saved", []byte(tt.saved), 0o750); err != nil {
					t.Fatal(err)
				}
			}
			ran := false
			err := withoutServiceStarts(path, func() error {
				ran = true
				// What invoke-rc.d runs, and how: it must be executable
				// and forbid the action.
				fi, err := os.Stat(path)
				if err != nil || fi.Mode().Perm()&0o111 == 0 {
					t.Errorf("policy during install: %v, %v; want an executable file", fi, err)
				}
				var exit *exec.ExitError
				if err := exec.Command("sh", path, "containerd", "start").Run(); !errors.As(err, &exit) || exit.ExitCode() != 101 {
					t.Errorf("policy during install exited with %v, want 101", err)
				}
				return tt.installErr
			})
			if (err != nil) != tt.wantErr {
				t.Errorf("error = %v, want error %v", err, tt.wantErr)
			}
			if tt.installErr != nil && !errors.Is(err, tt.installErr) {
				t.Errorf("error = %v, want the install's", err)
			}
			if ran != tt.wantRun {
				t.Errorf("install ran = %v, want %v", ran, tt.wantRun)
			}
			got, err := os.ReadFile(path)
			switch {
			case tt.after == "" && !os.IsNotExist(err):
				t.Errorf("policy-rc.d after = %q, %v; want none", got, err)
			case tt.after != "" && string(got) != tt.after:
				t.Errorf("policy-rc.d after = %q, %v; want %q", got, err, tt.after)
			}
			if tt.after != "" {
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != tt.afterMode {
					t.Errorf("mode after = %v, %v; want %v", fi.Mode().Perm(), err, tt.afterMode)
				}
			}
			leftovers := []string{path + ".gmini-tmp"}
			if tt.saved == "" || tt.before == denyAll {
				leftovers = append(leftovers, path+".gmini-saved")
			}
			for _, f := range leftovers {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("%s left", f)
				}
			}
		})
	}
}
