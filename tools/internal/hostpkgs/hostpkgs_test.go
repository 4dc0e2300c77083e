package hostpkgs

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"testing"
)

func TestMissing(t *testing.T) {
	tests := []struct {
		name   string
		want   []Package
		status string
		miss   []Package
	}{
		{
			name:   "all installed",
			want:   []Package{"runc", "iptables"},
			status: "iptables\tinstalled\nrunc\tinstalled\n",
		},
		{
			name:   "unknown to dpkg prints nothing",
			want:   []Package{"runc", "conntrack"},
			status: "runc\tinstalled\n",
			miss:   []Package{"conntrack"},
		},
		{
			name:   "removed but config left",
			want:   []Package{"containerd"},
			status: "containerd\tconfig-files\n",
			miss:   []Package{"containerd"},
		},
		{
			name:   "known but never installed",
			want:   []Package{"kmod"},
			status: "kmod\tnot-installed\n",
			miss:   []Package{"kmod"},
		},
		{
			name:   "half installed",
			want:   []Package{"conntrack"},
			status: "conntrack\thalf-configured\n",
			miss:   []Package{"conntrack"},
		},
		{
			name:   "multi-arch name",
			want:   []Package{"libc6"},
			status: "libc6:amd64\tinstalled\n",
		},
		{
			name:   "order of want kept, duplicates dropped",
			want:   []Package{"b", "a", "b", "c"},
			status: "c\tinstalled\n",
			miss:   []Package{"b", "a"},
		},
		{
			name:   "garbage lines ignored",
			want:   []Package{"a"},
			status: "dpkg-query: no packages found matching a\n\n",
			miss:   []Package{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Missing(tt.want, tt.status); !slices.Equal(got, tt.miss) {
				t.Errorf("Missing() = %v, want %v", got, tt.miss)
			}
		})
	}
}

// TestQuery runs the real dpkg-query: an unknown package must come back as
// missing rather than as an error.
func TestQuery(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a Debian host")
	}
	want := []Package{"dpkg", "gmini-no-such-package"}
	status, err := query(context.Background(), want)
	if err != nil {
		t.Fatal(err)
	}
	if got := Missing(want, status); !slices.Equal(got, []Package{"gmini-no-such-package"}) {
		t.Errorf("Missing() = %v, want only the unknown package", got)
	}
}

func TestEnsureNothingMissing(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a Debian host")
	}
	// dpkg is always installed, so Ensure must succeed without calling apt-get.
	if err := Ensure(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), "dpkg"); err != nil {
		t.Fatal(err)
	}
}
