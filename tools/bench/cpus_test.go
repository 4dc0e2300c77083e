package main

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCPUSplitHalves(t *testing.T) {
	s, err := newCPUSplit()
	if err != nil {
		t.Skipf("this machine cannot split: %v", err)
	}
	if len(s.controlCPUs) == 0 || len(s.restCPUs) == 0 {
		t.Fatalf("an empty half: control %v, rest %v", s.controlCPUs, s.restCPUs)
	}
	for _, c := range s.controlCPUs {
		if s.rest.IsSet(c) {
			t.Errorf("CPU %d is in both halves", c)
		}
	}
	if got, want := s.control.Count()+s.rest.Count(), s.all.Count(); got != want {
		t.Errorf("the halves hold %d CPUs, the process may use %d", got, want)
	}
}

// TestPinEveryThread pins this test process (the Go runtime runs it on
// several threads), checks each thread, then gives them every CPU back.
func TestPinEveryThread(t *testing.T) {
	s, err := newCPUSplit()
	if err != nil {
		t.Skipf("this machine cannot split: %v", err)
	}
	t.Cleanup(func() {
		if err := s.restore(); err != nil {
			t.Errorf("restore: %v", err)
		}
	})
	if err := pin(os.Getpid(), &s.rest); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		var got unix.CPUSet
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			t.Fatalf("not a thread ID: %q", task.Name())
		}
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			continue // ended since
		}
		if got != s.rest {
			t.Errorf("thread %d may run on %d CPUs, want the %d of %v", tid, got.Count(), s.rest.Count(), s.restCPUs)
		}
	}
}
