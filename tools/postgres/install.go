package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
	"github.com/gmini-dev/gmini/tools/internal/logtail"
)

// Package is Debian's server package of Version.
const Package hostpkgs.Package = "postgresql-" + Version

// commonConfDir is postgresql-common's configuration. Unless its
// createcluster.conf, or a file in createcluster.d which that file
// includes, says create_main_cluster = false, installing a server package
// creates a cluster "main" for the system, which a machine that only runs
// throwaway test servers (initdb'd into their own directories) must not
// get.
const commonConfDir = "/etc/postgresql-common"

// dropIn is the file that turns the main cluster off while the package
// installs; it is gone afterwards.
const dropIn = "gmini-no-main-cluster.conf"

// EnsureInstalled installs Debian's PostgreSQL server if it is missing,
// without the system-wide cluster its installation would create and
// start, and without a lasting change to the host's configuration.
func EnsureInstalled(ctx context.Context, log *slog.Logger) error {
	if os.Geteuid() == 0 {
		if err := removeLegacyEdit(filepath.Join(commonConfDir, "createcluster.conf")); err != nil {
			return err
		}
	}
	installed, err := isInstalled(ctx)
	if err != nil {
		return err
	}
	if installed {
		return nil
	}
	if os.Geteuid() != 0 {
		return hostpkgs.Ensure(ctx, log, Package) // which says it needs root
	}
	mainDir := filepath.Join("/etc/postgresql", Version, "main")
	_, err = os.Stat(mainDir)
	mainBefore := err == nil
	if err := withoutMainCluster(commonConfDir, func() error { return hostpkgs.Ensure(ctx, log, Package) }); err != nil {
		return err
	}
	// A createcluster.conf without the include_dir line (an older
	// postgresql-common, or one edited by hand) ignores the drop-in: undo
	// what the install made instead.
	if _, err := os.Stat(mainDir); err == nil && !mainBefore {
		log.Warn("the package created a main cluster despite "+dropIn+"; dropping it", "version", Version)
		out, err := exec.CommandContext(ctx, "pg_dropcluster", "--stop", Version, "main").CombinedOutput()
		if err != nil {
			return fmt.Errorf("drop the main cluster the install of %s created: %w: %s", Package, err, logtail.String(string(out), 5))
		}
	}
	return nil
}

func isInstalled(ctx context.Context) (bool, error) {
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\n", string(Package))
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return false, fmt.Errorf("dpkg-query %s: %w: %s", Package, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return len(hostpkgs.Missing([]hostpkgs.Package{Package}, out.String())) == 0, nil
}

// withoutMainCluster runs install while a drop-in in confDir's
// createcluster.d turns the main cluster off, then removes the drop-in
// and the directories it had to make, also when install fails. A drop-in
// rather than an edit of createcluster.conf: that file is the package's
// conffile, and the drop-in is read after it.
func withoutMainCluster(confDir string, install func() error) error {
	var made []string
	for _, d := range []string{confDir, filepath.Join(confDir, "createcluster.d")} {
		err := os.Mkdir(d, 0o755)
		if err == nil {
			made = append(made, d)
		} else if !errors.Is(err, fs.ErrExist) {
			return errors.Join(fmt.Errorf("create %s: %w", d, err), removeMade(made))
		}
	}
	path := filepath.Join(confDir, "createcluster.d", dropIn)
	text := "# gmini: installing PostgreSQL for test servers only; removed after the install\ncreate_main_cluster = false\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", path, err), removeMade(made))
	}
	err := install()
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("remove %s: %w", path, rerr))
	}
	return errors.Join(err, removeMade(made))
}

// removeMade removes the directories withoutMainCluster made, deepest
// first, unless the install put files there: then they are the package's.
func removeMade(dirs []string) error {
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		err := os.Remove(dirs[i])
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// legacyEdit is what earlier versions of this package appended to
// createcluster.conf and left there.
const legacyEdit = "# gmini: test servers only, no system-wide cluster\ncreate_main_cluster = false\n"

// removeLegacyEdit takes legacyEdit out of path again, so the host's next
// PostgreSQL version gets its main cluster as its packages intend.
func removeLegacyEdit(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	clean := bytes.ReplaceAll(b, []byte(legacyEdit), nil)
	if bytes.Equal(clean, b) {
		return nil
	}
	if err := os.WriteFile(path, clean, 0o644); err != nil {
		return fmt.Errorf("remove gmini's line from %s: %w", path, err)
	}
	return nil
}
