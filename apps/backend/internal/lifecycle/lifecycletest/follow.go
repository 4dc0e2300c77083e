package lifecycletest

import (
	"context"
	"errors"
	"io"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Logs is a scripted lifecycle.PodLogs: the test writes each pod's log as
// time goes on, and a follow reads it as it grows. client-go's fake
// clientset cannot follow a log (it answers "fake logs" at once).
type Logs struct {
	mu   sync.Mutex
	pods map[string]*podLog
	// changed is closed, and replaced, at every change: readers waiting
	// for more look again.
	changed chan struct{}
}

type podLog struct {
	data    []byte
	ended   bool
	removed bool
	// breaks counts Break: a reader opened before a break fails.
	breaks, opens int
}

// NewLogs returns scripted logs, all empty.
func NewLogs() *Logs {
	return &Logs{pods: map[string]*podLog{}, changed: make(chan struct{})}
}

func (l *Logs) pod(name string) *podLog {
	p := l.pods[name]
	if p == nil {
		p = &podLog{}
		l.pods[name] = p
	}
	return p
}

func (l *Logs) change(fn func(*podLog), pod string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fn(l.pod(pod))
	close(l.changed)
	l.changed = make(chan struct{})
}

// Write appends text to pod's log.
func (l *Logs) Write(pod, text string) {
	l.change(func(p *podLog) { p.data = append(p.data, text...) }, pod)
}

// End ends pod's log, as the container's exit does: readers get EOF once
// they have read it all.
func (l *Logs) End(pod string) { l.change(func(p *podLog) { p.ended = true }, pod) }

// Break fails the readers of pod's log open now, as a dropped connection
// does; the log stays readable anew.
func (l *Logs) Break(pod string) { l.change(func(p *podLog) { p.breaks++ }, pod) }

// Remove makes pod gone: its readers fail, and opening answers 404.
func (l *Logs) Remove(pod string) { l.change(func(p *podLog) { p.removed = true }, pod) }

// Opens is how many times pod's log was opened.
func (l *Logs) Opens(pod string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pod(pod).opens
}

// Open opens pod's log; follow or not, it reads as it grows, until End.
func (l *Logs) Open(ctx context.Context, _, pod, _ string, _ bool) (io.ReadCloser, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pod(pod)
	if p.removed {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, pod)
	}
	p.opens++
	return &logReader{l: l, pod: pod, ctx: ctx, breaks: p.breaks}, nil
}

type logReader struct {
	l      *Logs
	pod    string
	ctx    context.Context
	off    int
	breaks int
}

func (r *logReader) Read(b []byte) (int, error) {
	for {
		r.l.mu.Lock()
		p := r.l.pod(r.pod)
		switch {
		case p.removed:
			r.l.mu.Unlock()
			return 0, errors.New("stream error: the pod is gone")
		case p.breaks != r.breaks:
			r.l.mu.Unlock()
			return 0, errors.New("stream error: connection reset")
		case r.off < len(p.data):
			n := copy(b, p.data[r.off:])
			r.off += n
			r.l.mu.Unlock()
			return n, nil
		case p.ended:
			r.l.mu.Unlock()
			return 0, io.EOF
		}
		changed := r.l.changed
		r.l.mu.Unlock()
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *logReader) Close() error { return nil }
