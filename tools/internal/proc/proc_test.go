package proc

import (
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    Stat
		wantErr bool
	}{
		{
			name: "running process",
			in:   "123 (kube-apiserver) S 1 123 123 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 1 0 98765 0 0\n",
			want: Stat{Comm: "kube-apiserver", State: 'S', PPID: 1, UTime: 250, STime: 75, StartTime: 98765},
		},
		{
			name: "command name with spaces and parentheses",
			in:   "7 (a (b) c) Z 42 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 42 0",
			want: Stat{Comm: "a (b) c", State: 'Z', PPID: 42, UTime: 3, STime: 4, StartTime: 42},
		},
		{name: "no parentheses", in: "9 postgres S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42", wantErr: true},
		{name: "too few fields", in: "9 (x) S 1 9", wantErr: true},
		{name: "state longer than one letter", in: "9 (x) SS 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42", wantErr: true},
		{name: "start time not a number", in: "9 (x) S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 soon", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseStat error = %v, want error %v", err, tt.wantErr)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("ParseStat (-want +got):\n%s", d)
			}
		})
	}
}

func TestStatAliveAndCPU(t *testing.T) {
	t.Parallel()
	tests := []struct {
		state byte
		alive bool
	}{{'R', true}, {'S', true}, {'D', true}, {'T', true}, {'Z', false}, {'X', false}}
	for _, tt := range tests {
		if got := (Stat{State: tt.state}).Alive(); got != tt.alive {
			t.Errorf("Stat{State: %c}.Alive() = %v, want %v", tt.state, got, tt.alive)
		}
	}
	if got, want := (Stat{UTime: 150, STime: 50}).CPU(), 2*time.Second; got != want {
		t.Errorf("CPU() = %v, want %v", got, want)
	}
}

// TestReadStatSelf reads the test's own process, which the kernel formats.
func TestReadStatSelf(t *testing.T) {
	t.Parallel()
	s, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Alive() || s.PPID != os.Getppid() || s.StartTime == 0 {
		t.Errorf("ReadStat(self) = %+v; want alive, parent %d, a start time", s, os.Getppid())
	}
	if _, err := ReadStat(-1); err == nil {
		t.Error("ReadStat(-1) succeeded")
	}
}
