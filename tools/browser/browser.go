// Package browser is the headless Chromium the e2e suite drives gmini's
// status page with (github.com/chromedp/chromedp): Debian's chromium
// package, installed on demand like the local node's packages (or a
// Chromium or Chrome the machine has already, as CI runners' images do),
// started with flags that keep it off every network but this machine's
// loopback.
package browser

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/chromedp/chromedp"

	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
)

// Package is Debian's browser package.
const Package hostpkgs.Package = "chromium"

// ExecPath is where the package installs the browser.
const ExecPath = "/usr/bin/chromium"

// names are the commands a Chromium or Chrome answers to, Debian's
// first; Ubuntu's chromium-browser, last, may be a stub that wants a snap.
var names = []string{"chromium", "google-chrome", "google-chrome-stable", "chromium-browser"}

// Ensure returns the path of a Chromium or Chrome on this machine,
// installing Debian's chromium (apt-get's lines logged as they come: the
// download is large) when there is none.
func Ensure(ctx context.Context, log *slog.Logger) (string, error) {
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	if err := hostpkgs.Ensure(ctx, log, Package); err != nil {
		return "", err
	}
	if _, err := os.Stat(ExecPath); err != nil {
		return "", fmt.Errorf("%s is installed but %s is not there: %w", Package, ExecPath, err)
	}
	return ExecPath, nil
}

// Options are chromedp's for a headless Chromium at execPath that can
// reach nothing but this machine's loopback, where the tests' port-forwards
// listen: no background traffic (updates, metrics, safe browsing, sync), no
// name resolution but localhost's, and any other address through a proxy
// that does not exist. Loopback addresses never go through a proxy. The
// sandbox is off: the suite runs as root, where Chromium refuses it.
//
// Chromium keeps its singleton socket in a directory of its own under
// TMPDIR, which it removes only when it exits cleanly, and a browser
// stopped by chromedp is killed: with tmpDir (TempDir's, which its caller
// removes) it leaves nothing in the machine's /tmp.
func Options(execPath, tmpDir string) []chromedp.ExecAllocatorOption {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,CertificateTransparencyComponentUpdater"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"),
		chromedp.Flag("proxy-server", "http://127.0.0.1:9"),
		chromedp.WindowSize(1200, 640),
	)
	if tmpDir != "" {
		opts = append(opts, chromedp.Env("TMPDIR="+tmpDir))
	}
	return opts
}

// TempDir makes a directory for a browser's temporary files (Options'
// tmpDir) and returns it with the function that removes it. It is short
// and under os.TempDir on purpose: Chromium's singleton socket path must
// fit a Unix socket address (107 bytes), which a test's t.TempDir(), named
// after the test, does not.
func TempDir() (string, func(), error) {
	dir, err := os.MkdirTemp("", "gmini-chromium-")
	if err != nil {
		return "", nil, fmt.Errorf("the browser's temporary directory: %w", err)
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}
