//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
)

// tickLines is how many lines the test runner prints, one a second.
const tickLines = 10

// useTickRunner makes the template's runner print tickLines numbered,
// time-stamped lines a second apart (netprobe tick) instead of the
// product runner, with a short TTL; the returned func puts it back.
func useTickRunner(ctx context.Context, t *testing.T, cfg *envconf.Config) func() {
	t.Helper()
	cs := clientset(t, cfg).BatchV1().CronJobs(ns)
	before, err := cs.Get(ctx, "gmini-runner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"spec":{"jobTemplate":{"spec":{"ttlSecondsAfterFinished":%d,"template":{"spec":{"containers":[{"name":"runner","image":"gmini-netprobe:dev","command":["/netprobe","-count","%d","-every","1s","tick"]}]}}}}}}`,
		historyTTL, tickLines)
	if _, err := cs.Patch(ctx, "gmini-runner", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("make the template's runner tick: %v", err)
	}
	// New Jobs must see the patched template: the backend's informer
	// follows it within moments; give it one.
	time.Sleep(2 * time.Second)
	return func() {
		cur, err := cs.Get(context.Background(), "gmini-runner", metav1.GetOptions{})
		if err != nil {
			t.Errorf("restore the template: %v", err)
			return
		}
		cur.Spec = before.Spec
		if _, err := cs.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Errorf("restore the template: %v", err)
		}
		time.Sleep(2 * time.Second)
	}
}

// ticks returns the tick numbers in text, in order.
func ticks(text string) []int {
	var out []int
	for _, l := range strings.Split(text, "\n") {
		var n int
		var ts string
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "tick %d %s", &n, &ts); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func TestLogsFollow(t *testing.T) {
	var restore func()
	f := features.New("logs?follow=true streams the runner's output as it is printed, resumes with Last-Event-ID, and ends with the experiment").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			restore = useTickRunner(ctx, t, cfg)
			return ctx
		}).
		Assess("plain text: each line arrives within 2 s of being printed, and the stream ends with the experiment", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "follow-plain"
			c := backend(t, cfg)
			if _, err := c.Submit(ctx, map[string]any{"id": id}); err != nil {
				t.Fatalf("POST: %v", err)
			}
			// The follow may start before the pod: it waits for it. It goes
			// through the API server's service proxy, which flushes what it
			// relays every 200 ms; the lines are read as the client writes
			// them, through a pipe, to time each one.
			pr, pw := io.Pipe()
			defer pr.Close()
			followed := make(chan error, 1)
			go func() {
				err := c.FollowLogs(ctx, id, pw)
				pw.CloseWithError(err)
				followed <- err
			}()
			sc := bufio.NewScanner(pr)
			var got []int
			var worst time.Duration
			for sc.Scan() {
				var n int
				var ts string
				if _, err := fmt.Sscanf(sc.Text(), "tick %d %s", &n, &ts); err != nil {
					continue // an attempt header, if any
				}
				printed, err := time.Parse(time.RFC3339Nano, ts)
				if err != nil {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				lag := time.Since(printed)
				worst = max(worst, lag)
				got = append(got, n)
			}
			if err := <-followed; err != nil {
				t.Fatalf("follow: %v", err)
			}
			t.Logf("followed %d lines; the slowest arrived %s after it was printed", len(got), worst.Round(time.Millisecond))
			if len(got) != tickLines {
				t.Errorf("lines %v, want 0..%d once each", got, tickLines-1)
			}
			if worst > 2*time.Second {
				t.Errorf("a line arrived %s after it was printed, want within 2 s", worst)
			}
			if st := getStatus(ctx, t, cfg, id); st.State != "Succeeded" {
				t.Errorf("the stream ended with the experiment %s", st.State)
			}
			return ctx
		}).
		Assess("SSE: dropped after 3 lines, a reconnect with Last-Event-ID gets the rest without repeats, then done", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "follow-sse"
			c := backend(t, cfg)
			if _, err := c.Submit(ctx, map[string]any{"id": id}); err != nil {
				t.Fatalf("POST: %v", err)
			}
			var text strings.Builder
			var last string
			n := 0
			// The first connection is dropped by its callback's error,
			// after the third line.
			errDrop := errors.New("drop the connection")
			err := c.FollowLogsSSE(ctx, id, "", func(ev gmini.LogEvent) error {
				if ev.Type == gmini.EventOutput {
					text.Write(ev.Data)
					text.WriteString("\n")
					last = ev.ID
					n += len(ticks(string(ev.Data)))
				}
				if n >= 3 {
					return errDrop
				}
				return nil
			})
			if !errors.Is(err, errDrop) || last == "" {
				t.Fatalf("first connection: %v, last id %q", err, last)
			}
			done := false
			err = c.FollowLogsSSE(ctx, id, last, func(ev gmini.LogEvent) error {
				switch ev.Type {
				case gmini.EventOutput:
					text.Write(ev.Data)
					text.WriteString("\n")
				case gmini.EventDone:
					done = true
				}
				return nil
			})
			if err != nil {
				t.Fatalf("second connection: %v", err)
			}
			got := ticks(text.String())
			t.Logf("resumed after id %s; lines over both connections %v", last, got)
			if len(got) != tickLines {
				t.Errorf("lines %v, want 0..%d once each", got, tickLines-1)
			}
			for i, v := range got {
				if v != i {
					t.Errorf("lines %v: a repeat or a gap", got)
					break
				}
			}
			if !done {
				t.Error("no done event")
			}
			return ctx
		}).
		Assess("after the TTL removed the Job and its pod, follow answers the stored output and ends", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "follow-plain"
			waitJob(ctx, t, cfg, id, "removed by its TTL", 2*time.Minute, func(j *batchv1.Job) bool { return j == nil })
			var all strings.Builder
			if err := backend(t, cfg).FollowLogs(ctx, id, &all); err != nil {
				t.Fatalf("follow: %v", err)
			}
			if got := ticks(all.String()); len(got) != tickLines {
				t.Errorf("stored output lines %v, want %d", got, tickLines)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if restore != nil {
				restore()
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
