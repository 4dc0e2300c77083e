package lifecycle

import (
	"context"
	"fmt"
	"io"
	"sort"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// MaxLogBytes bounds what GET /experiments/{id}/logs returns. The end of
// the output is kept: it holds the result or the error.
const MaxLogBytes = 1 << 20

// Logs writes the runner's output of every attempt (pod) of the experiment
// that has started, oldest first, keeping the last MaxLogBytes. With more
// than one attempt, each is preceded by a header line naming its pod,
// phase and exit code, so a failed attempt stays readable while its retry
// runs or waits.
func (s *Store) Logs(ctx context.Context, id string, w io.Writer) error {
	job, err := s.job(ctx, id)
	if err != nil {
		return err
	}
	out, err := s.output(ctx, job)
	if err != nil {
		return err
	}
	_, err = w.Write(out.Bytes)
	return err
}

// Output is what a Job's runners printed, as Logs serves it, and how the
// last attempt ended.
type Output struct {
	Bytes []byte
	// ExitCode is the runner's exit code in the newest attempt, once it
	// has ended.
	ExitCode *int32
}

// Capture reads the output of job's attempts, for the history record of an
// experiment that has finished or is being cancelled. No attempt having
// started is not an error here: the output is then empty.
func (s *Store) Capture(ctx context.Context, job *batchv1.Job) (Output, error) {
	out, err := s.output(ctx, job)
	if failure.KindOf(err) == failure.Conflict {
		return Output{}, nil
	}
	return out, err
}

func (s *Store) output(ctx context.Context, job *batchv1.Job) (Output, error) {
	id := job.Annotations[jobspec.AnnotationID]
	pods, err := s.attempts(ctx, job)
	if err != nil {
		return Output{}, err
	}
	if len(pods) == 0 {
		return Output{}, failure.New(failure.Conflict, "experiment %q: no runner pod exists (yet or any more)", id)
	}
	started := pods[:0:0]
	for _, p := range pods {
		if runnerStarted(p) {
			started = append(started, p)
		}
	}
	if len(started) == 0 {
		return Output{}, failure.New(failure.Conflict, "experiment %q: no runner pod has started yet (%d waiting, the newest %s is %s)",
			id, len(pods), pods[len(pods)-1].Name, phase(pods[len(pods)-1]))
	}

	buf := &tail{max: MaxLogBytes}
	for i, p := range started {
		if len(started) > 1 {
			buf.startLine()
			fmt.Fprintf(buf, "==> attempt %d of %d: pod %s (%s) <==\n", i+1, len(started), p.Name, describe(p))
		}
		if err := s.copyLogs(ctx, p, buf); err != nil {
			return Output{}, err
		}
	}
	out := Output{Bytes: buf.Bytes()}
	if st := runnerStatus(started[len(started)-1]); st != nil && st.State.Terminated != nil {
		code := st.State.Terminated.ExitCode
		out.ExitCode = &code
	}
	return out, nil
}

// attempts lists the Job's pods, oldest first. Pods are selected by the
// Job's UID, not its name: after a DELETE and a new POST of the same ID, the
// old Job's pods (still terminating, same job-name label) are not this
// Job's.
func (s *Store) attempts(ctx context.Context, job *batchv1.Job) ([]*corev1.Pod, error) {
	list, err := s.Client.CoreV1().Pods(s.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID),
	})
	if err != nil {
		return nil, fmt.Errorf("list pods of job %s: %w", job.Name, err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		// The label can be copied by hand; the controller reference
		// cannot be faked by another Job's controller.
		if ref := metav1.GetControllerOf(p); ref != nil && ref.UID == job.UID {
			pods = append(pods, p)
		}
	}
	// Creation times have a resolution of one second; the name breaks
	// ties the same way on every call.
	sort.Slice(pods, func(i, j int) bool {
		ti, tj := pods[i].CreationTimestamp, pods[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return pods[i].Name < pods[j].Name
	})
	return pods, nil
}

func (s *Store) copyLogs(ctx context.Context, pod *corev1.Pod, w io.Writer) error {
	i, err := jobspec.RunnerIndex(&pod.Spec)
	if err != nil {
		return fmt.Errorf("find the runner of pod %s: %w", pod.Name, err)
	}
	stream, err := s.Client.CoreV1().Pods(s.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{
		Container: pod.Spec.Containers[i].Name,
	}).Stream(ctx)
	if err != nil {
		return fmt.Errorf("read logs of pod %s: %w", pod.Name, err)
	}
	defer stream.Close()
	if _, err := io.Copy(w, stream); err != nil {
		return fmt.Errorf("copy logs of pod %s: %w", pod.Name, err)
	}
	return nil
}

// runnerStatus is the runner container's status, if the kubelet reported
// one.
func runnerStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	i, err := jobspec.RunnerIndex(&pod.Spec)
	if err != nil {
		return nil
	}
	for j := range pod.Status.ContainerStatuses {
		if cs := &pod.Status.ContainerStatuses[j]; cs.Name == pod.Spec.Containers[i].Name {
			return cs
		}
	}
	return nil
}

// runnerStarted reports whether the runner has output to read: its
// container runs or ran. Without a container status the phase decides; a
// pod that failed before the kubelet reported one never ran.
func runnerStarted(pod *corev1.Pod) bool {
	if cs := runnerStatus(pod); cs != nil {
		return cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil
	}
	return pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodSucceeded
}

func phase(pod *corev1.Pod) string {
	if pod.Status.Phase == "" {
		return string(corev1.PodPending)
	}
	return string(pod.Status.Phase)
}

// describe is a pod's phase and, once the runner ended, its exit code.
func describe(pod *corev1.Pod) string {
	if cs := runnerStatus(pod); cs != nil && cs.State.Terminated != nil {
		return fmt.Sprintf("%s, exit %d", phase(pod), cs.State.Terminated.ExitCode)
	}
	return phase(pod)
}

// tail is a writer that keeps the last max bytes written to it, so a
// runner that prints far more than the limit costs at most twice the limit
// in memory, and the end of its output survives.
type tail struct {
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if len(t.buf)+len(p) > 2*t.max {
		// Keep only what can still be among the last max bytes.
		keep := t.max - len(p)
		t.buf = t.buf[:copy(t.buf, t.buf[len(t.buf)-keep:])]
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Bytes returns the last max bytes written.
func (t *tail) Bytes() []byte {
	if len(t.buf) > t.max {
		return t.buf[len(t.buf)-t.max:]
	}
	return t.buf
}

// startLine ends an unfinished last line, so what follows starts a line.
func (t *tail) startLine() {
	if len(t.buf) > 0 && t.buf[len(t.buf)-1] != '\n' {
		t.buf = append(t.buf, '\n')
	}
}
