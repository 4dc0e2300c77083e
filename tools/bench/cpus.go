package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gmini-dev/gmini/tools/cluster/local"
)

// cpuSplit gives the control plane (etcd, kube-apiserver,
// kube-controller-manager) one half of the machine's CPUs and the
// benchmark's side (itself, and what it starts afterwards: the backends,
// PostgreSQL) the other half. In a cluster the backend runs on a node and its
// database elsewhere, never on the API server's CPUs; on one shared machine
// every CPU second the backend spends is taken from the API server, which
// bounds the throughput, so a feature's cost shows twice. Split, the
// throughput ratios say whether a feature holds requests up, apart from what
// it costs in CPU (which the CPU-per-Job table says either way).
type cpuSplit struct {
	all, control, rest unix.CPUSet
	controlCPUs        []int
	restCPUs           []int
}

func newCPUSplit() (*cpuSplit, error) {
	s := &cpuSplit{}
	if err := unix.SchedGetaffinity(0, &s.all); err != nil {
		return nil, fmt.Errorf("read this process's CPUs: %w", err)
	}
	var cpus []int
	for i := range 1024 {
		if s.all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return nil, fmt.Errorf("-split-cpus needs at least 2 CPUs, this process may use %d", len(cpus))
	}
	s.controlCPUs, s.restCPUs = cpus[:len(cpus)/2], cpus[len(cpus)/2:]
	for _, c := range s.controlCPUs {
		s.control.Set(c)
	}
	for _, c := range s.restCPUs {
		s.rest.Set(c)
	}
	return s, nil
}

// apply pins the cluster's control plane to its half and this process to
// the other; processes this one starts later inherit its half.
func (s *cpuSplit) apply(c *local.Cluster) error {
	for _, name := range []string{local.Etcd, local.APIServer, local.ControllerManager} {
		pid, err := c.PID(name)
		if err != nil {
			return err
		}
		if err := pin(pid, &s.control); err != nil {
			return fmt.Errorf("pin %s to CPUs %v: %w", name, s.controlCPUs, err)
		}
	}
	if err := pin(os.Getpid(), &s.rest); err != nil {
		return fmt.Errorf("pin the benchmark to CPUs %v: %w", s.restCPUs, err)
	}
	return nil
}

// restore gives this process every CPU again (for what runs after the spawn
// benchmarks, such as the cluster with a node).
func (s *cpuSplit) restore() error { return pin(os.Getpid(), &s.all) }

func (s *cpuSplit) String() string {
	return fmt.Sprintf("split: etcd, kube-apiserver and kube-controller-manager on CPU %s; the benchmark, the backends and PostgreSQL on CPU %s",
		join(s.controlCPUs), join(s.restCPUs))
}

func join(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// pin sets the CPU affinity of every thread of pid. A thread inherits its
// creator's affinity, so the process's later threads and children follow;
// one made while the threads are walked may have copied the old one, so the
// walk repeats until every thread has set.
func pin(pid int, set *unix.CPUSet) error {
	for range 10 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); err == nil && cur == *set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // the thread ended
				}
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return fmt.Errorf("process %d keeps starting threads with other CPUs", pid)
}
