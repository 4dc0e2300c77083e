package logtail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		n    int
		want []string
	}{
		{"fewer lines than n", "a\nb\n", 5, []string{"a", "b"}},
		{"exactly n", "a\nb\nc", 3, []string{"a", "b", "c"}},
		{"more lines than n", "a\nb\nc\nd\n", 2, []string{"c", "d"}},
		{"trailing newlines dropped", "a\nb\n\n\n", 1, []string{"b"}},
		{"inner empty lines kept", "a\n\nb", 2, []string{"", "b"}},
		{"empty", "", 3, nil},
		{"only newlines", "\n\n", 3, nil},
		{"n zero", "a\nb", 0, nil},
		{"n negative", "a\nb", -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if d := cmp.Diff(tt.want, Lines(tt.in, tt.n)); d != "" {
				t.Errorf("Lines(%q, %d) (-want +got):\n%s", tt.in, tt.n, d)
			}
		})
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	if got, want := String("x\ny\nz\n", 2), "y\nz"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	if err := os.WriteFile(path, []byte("1\n2\n3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"existing log", path, "2\n3"},
		{"missing log says why", filepath.Join(dir, "none.log"), "(no log: open " + filepath.Join(dir, "none.log")},
	}
	for _, tt := range tests {
		if got := File(tt.path, 2); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: File = %q, want prefix %q", tt.name, got, tt.want)
		}
	}
}
