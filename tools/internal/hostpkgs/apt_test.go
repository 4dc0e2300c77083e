package hostpkgs

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// apt-get's output is logged a line at a time, however it is written.
func TestLineLog(t *testing.T) {
	var buf bytes.Buffer
	l := &lineLog{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
			return slog.Attr{}
		}
		return a
	}}))}
	for _, chunk := range []string{"Get:1 http://deb", ".debian.org chromium [80 MB]\nUnpack", "ing chromium ...\n\n  \nSetting up chromium"} {
		if _, err := l.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	l.flush()
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`msg=apt-get line="Get:1 http://deb.debian.org chromium [80 MB]"`,
		`msg=apt-get line="Unpacking chromium ..."`,
		`msg=apt-get line="Setting up chromium"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("logged\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l.all.String() != "Get:1 http://deb.debian.org chromium [80 MB]\nUnpacking chromium ...\n\n  \nSetting up chromium" {
		t.Errorf("kept %q", l.all.String())
	}
}
