package browser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestOptionsKeepTemporaryFiles: a browser started with Options and then
// killed, as chromedp stops it, leaves its temporary files in the
// directory given, none in the process's TMPDIR.
func TestOptionsKeepTemporaryFiles(t *testing.T) {
	var execPath string
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			execPath = p
			break
		}
	}
	if execPath == "" {
		t.Skip("no Chromium on this machine (the e2e suite installs it)")
	}
	// Short, as a machine's /tmp is: the socket path must fit (t.TempDir()
	// is named after the test).
	machineTmp, err := os.MkdirTemp("", "gmini-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(machineTmp) })
	t.Setenv("TMPDIR", machineTmp)
	own, remove, err := TempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), Options(execPath, own)...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, time.Minute)
	defer cancelTimeout()
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", execPath, err)
	}
	cancel()
	cancelAlloc()
	if left := chromiumDirs(t, machineTmp); len(left) > 0 {
		t.Errorf("the browser left %v in the process's TMPDIR", left)
	}
	if len(chromiumDirs(t, own)) == 0 {
		t.Errorf("no org.chromium.* directory in the directory given: the test shows nothing")
	}
	remove()
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("%s after its removal: %v", own, err)
	}
}

// TestTempDirFitsTheSocket: Chromium's singleton socket under TempDir's
// directory fits a Unix socket address, whatever the caller's name (a
// test's t.TempDir() did not: "Socket path too long").
func TestTempDirFitsTheSocket(t *testing.T) {
	dir, remove, err := TempDir()
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	// As Chromium names it: org.chromium.Chromium.XXXXXX/SingletonSocket.
	if p := filepath.Join(dir, "org.chromium.Chromium.XXXXXX", "SingletonSocket"); len(p) > 107 {
		t.Errorf("socket path %s is %d bytes, over 107", p, len(p))
	}
}

func chromiumDirs(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if strings.HasPrefix(e.Name(), "org.chromium.") {
			out = append(out, e.Name())
		}
	}
	return out
}
