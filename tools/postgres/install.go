package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
)

// Package is Debian's server package of Version.
const Package hostpkgs.Package = "postgresql-" + Version

// createClusterConf is read by Debian's postgresql-common when a server
// package is installed: unless it says create_main_cluster = false, the
// install creates a cluster "main" and starts it as a system service,
// which a machine that only runs throwaway test servers must not get.
const createClusterConf = "/etc/postgresql-common/createcluster.conf"

// EnsureInstalled installs Debian's PostgreSQL server if it is missing,
// without the system-wide cluster its installation would create and start.
func EnsureInstalled(ctx context.Context, log *slog.Logger) error {
	installed, err := isInstalled(ctx)
	if err != nil {
		return err
	}
	if installed {
		return nil
	}
	if os.Geteuid() == 0 {
		if err := disableMainCluster(createClusterConf); err != nil {
			return err
		}
	}
	return hostpkgs.Ensure(ctx, log, Package)
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

// mainClusterOff matches a setting that already turns the main cluster off.
var mainClusterOff = regexp.MustCompile(`(?m)^\s*create_main_cluster\s*=\s*'?(false|off|no|0)'?\s*(#.*)?$`)

// disableMainCluster makes path say create_main_cluster = false. Written
// before postgresql-common is installed, the file is kept: its maintainer
// script merges the packaged default with ucf, which keeps a local file
// when nobody can be asked. A later line wins over an earlier one.
func disableMainCluster(path string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if lastSetting(b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	text := "# gmini: test servers only, no system-wide cluster\ncreate_main_cluster = false\n"
	if len(b) > 0 && b[len(b)-1] != '\n' {
		text = "\n" + text
	}
	_, werr := f.WriteString(text)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

var mainClusterAny = regexp.MustCompile(`(?m)^\s*create_main_cluster\s*=.*$`)

// lastSetting reports whether the last create_main_cluster line of b is
// one that turns it off.
func lastSetting(b []byte) bool {
	all := mainClusterAny.FindAll(b, -1)
	return len(all) > 0 && mainClusterOff.Match(all[len(all)-1])
}
