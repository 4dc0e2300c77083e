package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// runs or waits. An attempt whose output can no longer be read has only
// its header, which says why. Nothing is written when it returns an error
// other than w's.
func (s *Store) Logs(ctx context.Context, id string, w io.Writer) error {
	job, err := s.job(ctx, id)
	if err != nil {
		return err
	}
	out, _, err := s.read(ctx, job)
	if err != nil {
		return err
	}
	_, err = out.WriteTo(w)
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
// started is not an error here: the output is then empty. Neither is an
// attempt whose output is gone for good: its header says so, and the
// record keeps the others'; an error means that retrying may do better.
func (s *Store) Capture(ctx context.Context, job *batchv1.Job) (Output, error) {
	out, exit, err := s.read(ctx, job)
	if failure.KindOf(err) == failure.Conflict {
		return Output{}, nil
	}
	if err != nil {
		return Output{}, err
	}
	return Output{Bytes: out.Bytes(), ExitCode: exit}, nil
}

// read reads the output of job's started attempts into a tail, and the
// newest attempt's exit code once it ended.
func (s *Store) read(ctx context.Context, job *batchv1.Job) (*tail, *int32, error) {
	id := job.Annotations[jobspec.AnnotationID]
	pods, err := s.attempts(ctx, job)
	if err != nil {
		return nil, nil, err
	}
	if len(pods) == 0 {
		return nil, nil, failure.New(failure.Conflict, "experiment %q: no runner pod exists (yet or any more)", id)
	}
	started := pods[:0:0]
	for _, p := range pods {
		if runnerStarted(p) {
			started = append(started, p)
		}
	}
	if len(started) == 0 {
		return nil, nil, failure.New(failure.Conflict, "experiment %q: no runner pod has started yet (%d waiting, the newest %s is %s)",
			id, len(pods), pods[len(pods)-1].Name, phase(pods[len(pods)-1]))
	}

	out := &tail{max: MaxLogBytes}
	copyBuf := make([]byte, 32<<10)
	for i, p := range started {
		stream, err := s.openLogs(ctx, p)
		if err != nil && !gone(err) {
			return nil, nil, err
		}
		out.startLine()
		switch {
		case err != nil:
			fmt.Fprintf(out, "==> attempt %d of %d: pod %s (%s): output unavailable: %s <==\n", i+1, len(started), p.Name, describe(p), reason(err))
			continue
		case len(started) > 1:
			fmt.Fprintf(out, "==> attempt %d of %d: pod %s (%s) <==\n", i+1, len(started), p.Name, describe(p))
		}
		_, err = io.CopyBuffer(out, stream, copyBuf)
		stream.Close()
		if err != nil {
			// Cut off midway: the rest may still be there.
			return nil, nil, fmt.Errorf("copy logs of pod %s: %w", p.Name, err)
		}
	}
	var exit *int32
	if st := runnerStatus(started[len(started)-1]); st != nil && st.State.Terminated != nil {
		code := st.State.Terminated.ExitCode
		exit = &code
	}
	return out, exit, nil
}

// gone reports a log read that can never succeed: the pod is gone (404),
// or the API server says the container's log cannot be served (400: it
// never started, or was removed). Anything else (unreachable, 5xx,
// timeouts, throttling) may pass on a retry.
func gone(err error) bool {
	var noRunner *noRunnerError
	return apierrors.IsNotFound(err) || apierrors.IsBadRequest(err) || errors.As(err, &noRunner)
}

// reason is a gone log read's cause, on one line.
func reason(err error) string {
	msg := err.Error()
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Message != "" {
		msg = status.Status().Message
	}
	return strings.Join(strings.Fields(msg), " ")
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
	pods := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[i] = &list.Items[i]
	}
	return ownedAttempts(job, pods), nil
}

// ownedAttempts keeps the pods job controls, oldest first.
func ownedAttempts(job *batchv1.Job, all []*corev1.Pod) []*corev1.Pod {
	var pods []*corev1.Pod
	for _, p := range all {
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
	return pods
}

// openLogs starts reading the runner's log of pod.
func (s *Store) openLogs(ctx context.Context, pod *corev1.Pod) (io.ReadCloser, error) {
	i, err := jobspec.RunnerIndex(&pod.Spec)
	if err != nil {
		return nil, &noRunnerError{pod: pod.Name, err: err}
	}
	stream, err := s.Client.CoreV1().Pods(s.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{
		Container: pod.Spec.Containers[i].Name,
	}).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("read logs of pod %s: %w", pod.Name, err)
	}
	return stream, nil
}

// noRunnerError: a pod's spec names no runner container; it never will.
type noRunnerError struct {
	pod string
	err error
}

func (e *noRunnerError) Error() string {
	return fmt.Sprintf("find the runner of pod %s: %v", e.pod, e.err)
}
func (e *noRunnerError) Unwrap() error { return e.err }

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

// tail is a writer that keeps the last max bytes written to it, in a ring
// of at most max bytes: reading any amount of output costs one buffer of
// the limit (a small one for a small output), and the end of the output,
// which holds the result or the error, survives.
type tail struct {
	max int
	// buf grows up to max, then wraps: the oldest byte is at head.
	buf  []byte
	head int
}

// smallTail is the first buffer's size: most runners print less, and only
// those that print more pay for the whole limit.
const smallTail = 64 << 10

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if n >= t.max {
		t.grow(t.max)
		t.buf = t.buf[:t.max]
		copy(t.buf, p[n-t.max:])
		t.head = 0
		return n, nil
	}
	if room := t.max - len(t.buf); room > 0 {
		k := min(room, len(p))
		t.grow(len(t.buf) + k)
		t.buf = append(t.buf, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		k := copy(t.buf[t.head:], p)
		p = p[k:]
		t.head = (t.head + k) % t.max
	}
	return n, nil
}

// grow makes room for size bytes: the small buffer first, then the limit,
// never anything between.
func (t *tail) grow(size int) {
	if size <= cap(t.buf) {
		return
	}
	c := t.max
	if size <= smallTail {
		c = min(smallTail, t.max)
	}
	b := make([]byte, len(t.buf), c)
	copy(b, t.buf)
	t.buf = b
}

// WriteTo writes the last max bytes written, oldest first.
func (t *tail) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, part := range [][]byte{t.buf[t.head:], t.buf[:t.head]} {
		if len(part) == 0 {
			continue
		}
		n, err := w.Write(part)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Bytes returns the last max bytes written, in one slice.
func (t *tail) Bytes() []byte {
	if t.head == 0 {
		return t.buf
	}
	b := make([]byte, 0, len(t.buf))
	return append(append(b, t.buf[t.head:]...), t.buf[:t.head]...)
}

// startLine ends an unfinished last line, so what follows starts a line.
func (t *tail) startLine() {
	if len(t.buf) == 0 {
		return
	}
	last := len(t.buf) - 1
	if t.head > 0 {
		last = t.head - 1
	}
	if t.buf[last] != '\n' {
		t.Write([]byte{'\n'})
	}
}
