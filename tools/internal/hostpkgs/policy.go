package hostpkgs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// policyRCD is where Debian's invoke-rc.d and deb-systemd-invoke ask
// whether a maintainer script may start a service (init-system-helpers'
// README.policy-rc.d).
const policyRCD = "/usr/sbin/policy-rc.d"

// denyAll answers 101, "action forbidden", to every request.
const denyAll = "#!/bin/sh\n# gmini: installing packages for tests only; start no service\nexit 101\n"

// withoutServiceStarts runs install while a policy-rc.d at path forbids
// starting services: the packages the tools install (containerd,
// PostgreSQL) would otherwise start system services nobody asked for.
// The host's own policy, if it has one, is moved aside and put back
// afterwards, also when install fails.
func withoutServiceStarts(path string, install func() error) error {
	saved := path + ".gmini-saved"
	if _, err := os.Stat(saved); err == nil {
		// An earlier run was killed before it put the host's policy back;
		// that is only safe to assume while ours is in place.
		cur, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(cur, []byte(denyAll)) {
			return fmt.Errorf("%s exists, left by an interrupted install: check it and move it back to %s", saved, path)
		}
	} else if err := os.Rename(path, saved); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("move %s aside: %w", path, err)
	}
	restore := func() error {
		err := os.Rename(saved, path)
		if errors.Is(err, fs.ErrNotExist) {
			err = os.Remove(path)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore %s: %w", path, err)
		}
		return nil
	}
	tmp := path + ".gmini-tmp"
	if err := os.WriteFile(tmp, []byte(denyAll), 0o755); err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", tmp, err), restore())
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("install %s: %w", path, err), os.Remove(tmp), restore())
	}
	return errors.Join(install(), restore())
}
