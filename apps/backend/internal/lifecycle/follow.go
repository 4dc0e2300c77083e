package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Position is a place in an experiment's output that is the same whether
// the output comes from the live pods or from the stored record, so a
// follower can resume across the switch: the attempt (1 for the oldest
// started pod) and the bytes of that attempt's section before it. A
// section is the attempt's output, plus the newline Logs adds when that
// output does not end with one and another attempt follows; header lines
// are not counted, since their phase and exit code change while the
// attempt runs. The zero Position is the beginning.
type Position struct {
	Attempt int
	// Offset is -1 for output whose place is not known: the start of a
	// stored output cut to MaxLogBytes.
	Offset int64
}

// Known reports whether p can be resumed from.
func (p Position) Known() bool { return p.Offset >= 0 }

func (p Position) String() string {
	return strconv.Itoa(p.Attempt) + ":" + strconv.FormatInt(p.Offset, 10)
}

// ParsePosition reads a Position as String writes it.
func ParsePosition(s string) (Position, error) {
	a, o, ok := strings.Cut(s, ":")
	attempt, err1 := strconv.Atoi(a)
	offset, err2 := strconv.ParseInt(o, 10, 64)
	if !ok || err1 != nil || err2 != nil || attempt < 1 || offset < 0 || a != strconv.Itoa(attempt) {
		return Position{}, failure.New(failure.Invalid, "position %s: want <attempt>:<byte offset>, such as 2:1024, as sent in an event's id", failure.Quote(s))
	}
	return Position{Attempt: attempt, Offset: offset}, nil
}

// LogSink receives a follow's output, in order. Its errors (the client
// went away) end the follow.
type LogSink interface {
	// Begin comes once, before anything else, when the experiment is
	// known to exist: what fails after it can no longer be a status code.
	Begin() error
	// Header is the header line (without its newline) of the attempt at
	// at, which is (attempt, 0).
	Header(at Position, line string) error
	// Output is more of an attempt's section; end is the position after
	// p. p is only valid during the call.
	Output(end Position, p []byte) error
}

// PodLogs opens the log of one container. The Store's default is the API
// server's pods/log; tests put a scripted one here, since the fake
// clientset's log read answers a fixed body and cannot follow.
type PodLogs interface {
	Open(ctx context.Context, namespace, pod, container string, follow bool) (io.ReadCloser, error)
}

type apiPodLogs struct{ client kubernetes.Interface }

func (a apiPodLogs) Open(ctx context.Context, namespace, pod, container string, follow bool) (io.ReadCloser, error) {
	return a.client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: follow}).Stream(ctx)
}

func (s *Store) podLogs() PodLogs {
	if s.PodLogs != nil {
		return s.PodLogs
	}
	return apiPodLogs{s.Client}
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// CallTimeout bounds each API call of a follow: a read of the Job, a
	// list of its pods, the opening of a log (not the log's streaming).
	// Default 10s.
	CallTimeout time.Duration
	// Poll is the pause between looks at the Job while no log streams:
	// before the first attempt starts, between attempts, after a stream
	// ended early. Default 1s.
	Poll time.Duration
}

func (o FollowOptions) withDefaults() FollowOptions {
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	return o
}

// followErrors is how many looks or log opens in a row may fail (the
// API server unreachable, throttling) before a follow gives up.
const followErrors = 5

// followBuffer is a follower's one read buffer: what a follow costs in
// memory, whatever the output's size.
const followBuffer = 32 << 10

// Follow streams the runner's output of every attempt of id to sink from
// from on, following the newest attempt's log as it is written, until the
// Job has finished and its last started attempt's log has ended. With more
// than one attempt, each attempt the follow starts has a header line as
// Logs writes them, with the phase and the number of attempts at that
// moment.
//
// An error of kind NotFound means the Job is gone (or was replaced): the
// LogEnd then has the last state seen, and the caller may go on from the
// record, at the position the sink has reached.
func (s *Store) Follow(ctx context.Context, id string, from Position, sink LogSink, opts FollowOptions) (wire.LogEnd, error) {
	f := &follower{s: s, id: id, sink: sink, opts: opts.withDefaults(), pos: from, from: from}
	return f.run(ctx)
}

type follower struct {
	s    *Store
	id   string
	sink LogSink
	opts FollowOptions
	// from is where the follow started; pos is what the sink has.
	from, pos Position
	begun     bool
	// headers turns on once more than one attempt has started.
	headers bool
	jobUID  types.UID
	// k is the attempt being followed, cur its pod; done once its log
	// has ended for good.
	k    int
	cur  *corev1.Pod
	done bool
	// eof: the last stream of k's log ended at its end, not broken.
	eof bool
	// total is the number of started attempts when k was entered.
	total int
	// last is the last byte of attempt k's section the sink has.
	last  byte
	state wire.LogEnd
	buf   []byte
	// fails counts failed looks in a row, openFails failed log opens in a
	// row; idle counts reopens in a row that brought nothing new.
	fails, openFails, idle int
}

func (f *follower) run(ctx context.Context) (wire.LogEnd, error) {
	f.state.Source = SourceJob
	for {
		job, started, err := f.look(ctx)
		if err != nil {
			return f.state, err
		}
		if !f.begun {
			if err := f.sink.Begin(); err != nil {
				return f.state, err
			}
			f.begun = true
		}
		st := FromJob(job)
		f.state = wire.LogEnd{State: st.State, Reason: st.Reason, Message: st.Message, Source: SourceJob}
		if len(started) > 1 {
			f.headers = true
		}
		if f.cur != nil && !f.done {
			fresh := find(started, f.cur)
			if fresh == nil || runnerEnded(fresh) && f.eof {
				// The log was read to its end and the runner will write
				// no more, or the pod is gone.
				f.done = true
			} else {
				// The stream ended early (a connection dropped, or the
				// status lags the container's exit): read on.
				f.cur = fresh
				before := f.pos
				if err := f.stream(ctx); err != nil {
					return f.state, err
				}
				// Each reopen reads the log again up to the position: a
				// log that keeps ending early is reopened ever less often.
				pause := f.opts.Poll
				if f.pos == before {
					f.idle = min(f.idle+1, 5)
					pause <<= f.idle
				} else {
					f.idle = 0
				}
				if err := sleepFor(ctx, pause); err != nil {
					return f.state, err
				}
				continue
			}
		}
		if next := f.next(started); next != nil {
			if err := f.enter(next, len(started)); err != nil {
				return f.state, err
			}
			if err := f.stream(ctx); err != nil {
				return f.state, err
			}
		} else if state.Final(st.State) {
			if len(started) > 0 {
				if rs := runnerStatus(started[len(started)-1]); rs != nil && rs.State.Terminated != nil {
					code := rs.State.Terminated.ExitCode
					f.state.ExitCode = &code
				}
			}
			return f.state, nil
		}
		if err := f.sleep(ctx); err != nil {
			return f.state, err
		}
	}
}

// look reads the Job and its started attempts, retrying what may pass.
func (f *follower) look(ctx context.Context) (*batchv1.Job, []*corev1.Pod, error) {
	for {
		job, started, err := f.lookOnce(ctx)
		if err == nil || failure.KindOf(err) == failure.NotFound || ctx.Err() != nil {
			if err == nil {
				f.fails = 0
			}
			return job, started, err
		}
		if f.fails++; f.fails >= followErrors {
			return nil, nil, fmt.Errorf("follow the logs of experiment %q: %d looks at its job failed in a row: %w", f.id, f.fails, err)
		}
		if err := f.sleep(ctx); err != nil {
			return nil, nil, err
		}
	}
}

func (f *follower) lookOnce(ctx context.Context) (*batchv1.Job, []*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.CallTimeout)
	defer cancel()
	job, pods, watched := f.s.watched(f.id)
	if !watched {
		var err error
		if job, err = f.s.job(ctx, f.id); err != nil {
			if failure.KindOf(err) == failure.NotFound {
				f.state.Message = "the job is gone"
			}
			return nil, nil, err
		}
	}
	if f.jobUID == "" {
		f.jobUID = job.UID
	} else if job.UID != f.jobUID {
		// Another Job of the same ID (deleted and submitted again): its
		// attempts are not the ones the positions count.
		f.state.Message = "the job was replaced"
		return nil, nil, failure.New(failure.NotFound, "experiment %q: job %s was replaced while its logs were followed", f.id, job.Name)
	}
	if f.cur == nil && neverRan(job) {
		// Held or queued (suspended) and no pod ever counted: nothing to
		// list until it is resumed. A sweep's queued experiments followed
		// by the hundred cost one read a second each, not two.
		return job, nil, nil
	}
	if !watched {
		var err error
		if pods, err = f.s.attempts(ctx, job); err != nil {
			return nil, nil, err
		}
	}
	started := pods[:0:0]
	for _, p := range pods {
		if runnerStarted(p) {
			started = append(started, p)
		}
	}
	return job, started, nil
}

// watched is the experiment's Job and its pods from s.Watch, if it has
// them, and only while the Job is unfinished: a follow decides from a
// finished Job that it has read every attempt, which holds only for pods
// read after the Job (from the API), and two watches do not promise that.
func (s *Store) watched(id string) (*batchv1.Job, []*corev1.Pod, bool) {
	if s.Watch == nil {
		return nil, nil, false
	}
	job := s.Watch.job(s.Namespace, jobspec.JobName(id))
	if job == nil || job.DeletionTimestamp != nil {
		return nil, nil, false
	}
	if owner, ok := jobspec.Owns(job); !ok || owner != id || state.Final(FromJob(job).State) {
		return nil, nil, false
	}
	pods, ok := s.Watch.podsOf(job.UID)
	if !ok {
		return nil, nil, false
	}
	return job, ownedAttempts(job, pods), true
}

// next is the attempt to follow after the current one: the first started
// pod ordered after it (found by order, not index, since an older pod may
// have gone), or, for the first, the attempt the follow resumes in.
func (f *follower) next(started []*corev1.Pod) *corev1.Pod {
	if f.cur == nil {
		k := max(f.from.Attempt, 1)
		if k <= len(started) {
			return started[k-1]
		}
		return nil
	}
	for _, p := range started {
		if podBefore(f.cur, p) {
			return p
		}
	}
	return nil
}

// enter moves to the attempt of pod, the total-th started: the previous
// attempt's section is ended with a newline as Logs does, so the next
// header starts a line.
func (f *follower) enter(pod *corev1.Pod, total int) error {
	if f.cur == nil {
		f.k = max(f.from.Attempt, 1)
	} else {
		if f.pos.Attempt == f.k && f.pos.Offset > 0 && f.last != '\n' {
			f.pos.Offset++
			f.last = '\n'
			if err := f.sink.Output(f.pos, []byte{'\n'}); err != nil {
				return err
			}
		}
		f.k++
	}
	if f.k > 1 {
		// A second attempt: headers say which output is whose, also
		// when the first attempt's pod is gone by now.
		f.headers = true
	}
	f.cur, f.done, f.last, f.total = pod, false, 0, max(total, f.k)
	return nil
}

// header writes attempt k's header unless the sink has it (it resumes in
// or after k), or there is only one attempt and the log is readable.
func (f *follower) header(total int, unavailable error) error {
	if f.pos.Attempt >= f.k || (!f.headers && unavailable == nil) {
		return nil
	}
	line := fmt.Sprintf("==> attempt %d of %d: pod %s (%s) <==", f.k, total, f.cur.Name, describe(f.cur))
	if unavailable != nil {
		line = fmt.Sprintf("==> attempt %d of %d: pod %s (%s): output unavailable: %s <==", f.k, total, f.cur.Name, describe(f.cur), reason(unavailable))
	}
	f.pos = Position{Attempt: f.k}
	return f.sink.Header(f.pos, line)
}

// stream copies attempt k's log to the sink until the log ends or breaks,
// reading and discarding what the sink has already: the API server's log
// read takes no byte offset (limitBytes cuts the end, not the start).
func (f *follower) stream(ctx context.Context) error {
	total := f.total
	rc, err := f.open(ctx)
	switch {
	case err != nil && gone(err):
		f.done = true
		return f.header(total, err)
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		if f.openFails++; f.openFails >= followErrors {
			return fmt.Errorf("follow the logs of experiment %q: %d opens in a row failed: %w", f.id, f.openFails, err)
		}
		return nil
	}
	f.openFails = 0
	defer rc.Close()
	f.eof = false
	if err := f.header(total, nil); err != nil {
		return err
	}
	var skip int64
	if f.pos.Attempt == f.k {
		skip = f.pos.Offset
	}
	if f.buf == nil {
		f.buf = make([]byte, followBuffer)
	}
	for {
		n, rerr := rc.Read(f.buf)
		data := f.buf[:n]
		if skip > 0 && len(data) > 0 {
			d := min(skip, int64(len(data)))
			f.last = data[d-1]
			data, skip = data[d:], skip-d
		}
		if len(data) > 0 {
			if f.pos.Attempt != f.k {
				f.pos = Position{Attempt: f.k}
			}
			f.pos.Offset += int64(len(data))
			f.last = data[len(data)-1]
			if err := f.sink.Output(f.pos, data); err != nil {
				return err
			}
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF):
			f.eof = true
			if skip > 0 {
				// The sink has more than this log holds: the newline
				// that ended the section (or the log was cut).
				f.last = '\n'
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		// A broken stream: run looks at the pod again and reopens it.
		return nil
	}
}

// open opens the current attempt's log, following it; only the opening is
// bounded by CallTimeout, the stream lives with ctx.
func (f *follower) open(ctx context.Context) (io.ReadCloser, error) {
	i, err := jobspec.RunnerIndex(&f.cur.Spec)
	if err != nil {
		return nil, &noRunnerError{pod: f.cur.Name, err: err}
	}
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(f.opts.CallTimeout, cancel)
	rc, err := f.s.podLogs().Open(sctx, f.s.Namespace, f.cur.Name, f.cur.Spec.Containers[i].Name, true)
	if !timer.Stop() && err == nil {
		rc.Close()
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("follow the logs of pod %s: %w", f.cur.Name, err)
	}
	return &cancelCloser{ReadCloser: rc, cancel: cancel}, nil
}

type cancelCloser struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelCloser) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func (f *follower) sleep(ctx context.Context) error { return sleepFor(ctx, f.opts.Poll) }

func sleepFor(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// find is pod's current version in pods, by UID.
func find(pods []*corev1.Pod, pod *corev1.Pod) *corev1.Pod {
	for _, p := range pods {
		if p.UID == pod.UID && p.Name == pod.Name {
			return p
		}
	}
	return nil
}

// podBefore orders attempts as attempts does.
func podBefore(a, b *corev1.Pod) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	return a.Name < b.Name
}

// runnerEnded reports whether the runner will write no more: its
// container terminated, or the pod finished.
func runnerEnded(pod *corev1.Pod) bool {
	if cs := runnerStatus(pod); cs != nil && cs.State.Terminated != nil {
		return true
	}
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// headerLine matches the header lines Logs writes, to cut a stored output
// back into its attempts.
var headerLine = regexp.MustCompile(`^==> attempt ([1-9][0-9]*) of [1-9][0-9]*: pod [^ ]+ \(.*\)(: output unavailable: .*)? <==$`)

// section is one attempt's part of a stored output.
type section struct {
	attempt int
	header  string
	body    []byte
	// cut: the output was cut to MaxLogBytes inside this section (or
	// before it): its offsets are not known.
	cut bool
}

// sections cuts a stored output (as Logs and Capture write it) into its
// attempts. An output without headers is one attempt's. A runner that
// prints a line of exactly a header's form would be cut there too.
func sections(out []byte) []section {
	var secs []section
	lead := section{attempt: 1, cut: len(out) >= MaxLogBytes}
	cur, start := &lead, 0
	for i := 0; i < len(out); {
		j := i + indexByte(out[i:], '\n')
		if m := headerLine.FindSubmatch(out[i:j]); m != nil {
			cur.body = out[start:i]
			if cur != &lead {
				secs = append(secs, *cur)
			}
			n, _ := strconv.Atoi(string(m[1]))
			cur = &section{attempt: n, header: string(out[i:j])}
			start = min(j+1, len(out))
		}
		i = j + 1
	}
	cur.body = out[start:]
	if cur != &lead {
		secs = append(secs, *cur)
	}
	switch {
	case len(secs) > 0:
		// What precedes the first header is the end of the attempt before
		// it, cut off, or nothing.
		lead.attempt = secs[0].attempt - 1
		lead.cut = true
	case lead.cut:
		// Cut, without a header left: which attempt it ends is unknown.
		lead.attempt = 0
	}
	if len(lead.body) > 0 || len(secs) == 0 {
		secs = append([]section{lead}, secs...)
	}
	return secs
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return len(b)
}

// Replay writes a stored output to sink from from on, as a follow of the
// live pods would have: what the sink had from the pods is not repeated.
// Output whose start was cut off (beyond MaxLogBytes) has no known
// position: a resume inside it starts again at its first kept byte.
func Replay(out []byte, from Position, sink LogSink) error {
	for _, sec := range sections(out) {
		// An attempt the sink has passed is skipped; one of unknown
		// number (0) is sent again rather than risk a gap.
		if sec.attempt != 0 && sec.attempt < from.Attempt {
			continue
		}
		if sec.header != "" && from.Attempt < sec.attempt {
			if err := sink.Header(Position{Attempt: sec.attempt}, sec.header); err != nil {
				return err
			}
		}
		body, off := sec.body, int64(0)
		switch {
		case sec.cut:
			off = -1
		case sec.attempt == from.Attempt:
			off = min(from.Offset, int64(len(body)))
			body = body[off:]
		}
		for len(body) > 0 {
			n := min(len(body), followBuffer)
			end := Position{Attempt: sec.attempt, Offset: -1}
			if off >= 0 {
				off += int64(n)
				end.Offset = off
			}
			if err := sink.Output(end, body[:n]); err != nil {
				return err
			}
			body = body[n:]
		}
	}
	return nil
}

// neverRan reports whether job is suspended and has had no pod: the Job
// controller creates none while it is suspended, and counts every pod it
// made in active, succeeded, failed or terminating.
func neverRan(job *batchv1.Job) bool {
	st := job.Status
	return job.Spec.Suspend != nil && *job.Spec.Suspend &&
		st.Active == 0 && st.Succeeded == 0 && st.Failed == 0 && (st.Terminating == nil || *st.Terminating == 0)
}
