//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gmini-dev/gmini/tools/internal/proc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// backendContainer is the backend's container in its Deployment
// (k8s/base/deployment.yaml).
const backendContainer = "backend"

// crash is what crashPod did.
type crash struct {
	pids []int
	// start is just before the first signal, done once every process was
	// sent SIGSTOP: nothing the processes stamp is later than done.
	start, done time.Time
}

// crashPod makes the processes of the pod's container stop running at once
// and for good, as a crash would: they release nothing they hold and
// finish nothing they started. On the local node a container's processes
// are processes of this machine, in the cgroups containerd names after the
// container's ID; signalling them needs root, as the local node does.
//
// SIGSTOP freezes them first; the pod is then deleted, and only then does
// SIGKILL end them. Killed at once, the container would be restarted by the
// kubelet in the same pod, under the same pod name, which is the replica's
// identity in the recorder's Lease, and client-go lets a candidate whose
// identity is the holder's renew the Lease at once: the hand-over would be
// a restart, not the expiry that a crash-looping replica or a lost node
// leaves to the others. A frozen container still counts as running, so
// the kubelet restarts nothing before it learns the pod is gone, and the
// SIGTERM it sends then stays pending until SIGKILL, which runs no handler.
func crashPod(ctx context.Context, client kubernetes.Interface, namespace, name, container string) (crash, error) {
	pod, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return crash{}, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	id, err := containerID(pod, container)
	if err != nil {
		return crash{}, err
	}
	pids, err := containerPIDs(id)
	if err != nil {
		return crash{}, err
	}
	if len(pids) == 0 {
		return crash{}, fmt.Errorf("container %s of pod %s/%s (%s): no process of this machine is in its cgroup; is the cluster a local node?", container, namespace, name, id)
	}
	k := crash{pids: pids, start: time.Now()}
	if err := signalAll(pids, syscall.SIGSTOP); err != nil {
		_ = signalAll(pids, syscall.SIGKILL) // leave nothing frozen
		return k, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	k.done = time.Now()
	if err := waitState(ctx, pids, "stopped", func(st byte) bool { return st == 'T' || st == 'Z' || st == 'X' || st == 0 }); err != nil {
		_ = signalAll(pids, syscall.SIGKILL)
		return k, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	if err := client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		_ = signalAll(pids, syscall.SIGKILL)
		return k, fmt.Errorf("delete pod %s/%s after stopping its %s container: %w", namespace, name, container, err)
	}
	if err := signalAll(pids, syscall.SIGKILL); err != nil {
		return k, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	if err := waitState(ctx, pids, "gone", func(st byte) bool { return st == 'Z' || st == 'X' || st == 0 }); err != nil {
		return k, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	return k, nil
}

// signalAll sends sig to every process; one that is gone already is no error.
func signalAll(pids []int, sig syscall.Signal) error {
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("send %v to process %d: %w", sig, pid, err)
		}
	}
	return nil
}

// waitState waits until every process's state satisfies ok (0 for a
// process that no longer exists). The signals it follows cannot be caught,
// so a process that does not get there within 10 s is stuck in the kernel,
// and the test's timing would mean nothing.
func waitState(ctx context.Context, pids []int, what string, ok func(byte) bool) error {
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		for _, pid := range pids {
			if !ok(procState(pid)) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		var states []string
		for _, pid := range pids {
			states = append(states, fmt.Sprintf("%d:%q", pid, procState(pid)))
		}
		return fmt.Errorf("processes not %s 10 s after the signal (states %s): %w", what, strings.Join(states, " "), err)
	}
	return nil
}

// containerID is the runtime's ID of the pod's container, without its
// "containerd://" scheme.
func containerID(pod *corev1.Pod, container string) (string, error) {
	var names []string
	for _, cs := range pod.Status.ContainerStatuses {
		names = append(names, cs.Name)
		if cs.Name != container {
			continue
		}
		_, id, ok := strings.Cut(cs.ContainerID, "://")
		if !ok || id == "" || cs.State.Running == nil {
			return "", fmt.Errorf("container %s of pod %s/%s is not running (ID %q, state %+v)", container, pod.Namespace, pod.Name, cs.ContainerID, cs.State)
		}
		return id, nil
	}
	return "", fmt.Errorf("pod %s/%s has no container %s (it has %v)", pod.Namespace, pod.Name, container, names)
}

// containerPIDs lists the processes of this machine whose cgroup path names
// the container's ID, in every hierarchy: on the local node or on kind.
func containerPIDs(id string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	// The ID is in the path as a directory of its own (cgroupfs:
	// .../<id>) or in a systemd unit's name (.../cri-containerd-<id>.scope):
	// 64 hex digits, found nowhere else.
	needle := []byte(id)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue // ended while we looked
		}
		if bytes.Contains(cg, needle) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procState is the process's state letter from /proc/<pid>/stat (R, S,
// D, T, Z, ...), or 0 if there is no such process.
func procState(pid int) byte {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return 0
	}
	return st.State
}
