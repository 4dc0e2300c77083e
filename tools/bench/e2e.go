package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// Stages of one experiment, as first seen by a watch from the host
// (millisecond resolution, unlike the API's one-second timestamps). There
// is no stage for the container's start: the kubelet reports the container
// running in the same status update as the sandbox's
// PodReadyToStartContainers, so a watch sees both at once, and the
// container's state.running.startedAt has the API's one-second resolution,
// coarser than the step it would time. The step to "container exited"
// holds the container's start.
const (
	stPosted    = "POST answered"
	stPod       = "pod created"
	stScheduled = "pod scheduled"
	stSandbox   = "sandbox ready"
	stExited    = "container started and exited"
	stComplete  = "Job Complete"
)

var stages = []string{stPosted, stPod, stScheduled, stSandbox, stExited, stComplete}

// timeline holds, per Job name, when each stage was first seen.
type timeline struct {
	mu   sync.Mutex
	seen map[string]map[string]time.Time
}

func (t *timeline) mark(job, stage string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.seen[job]
	if m == nil {
		m = map[string]time.Time{}
		t.seen[job] = m
	}
	if _, ok := m[stage]; !ok {
		m[stage] = at
	}
}

func (t *timeline) get(job, stage string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.seen[job][stage]
	return at, ok
}

func endToEnd(ctx context.Context, log *slog.Logger, l layout.Layout, c *local.Cluster, o options, images deploy.Images, rep *report) error {
	defer func() {
		if err := c.Destroy(context.WithoutCancel(ctx)); err != nil {
			log.Error("destroy cluster", "name", o.e2eNm, "err", err)
		}
	}()
	ctx, err := deploy.Run(ctx, envconf.New(),
		envfuncs.CreateClusterWithOpts(c, o.e2eNm),
		deploy.LoadImages(log, o.e2eNm, images),
		deploy.ApplyOverlay(log, l.Overlay("dev")),
		deploy.WaitBackend(log, deploy.Namespace, 3*time.Minute),
	)
	if err != nil {
		return err
	}
	client, err := clientset(c.KubernetesRestConfig(), -1, 0)
	if err != nil {
		return err
	}
	// The host routes the service range into the cluster's namespace.
	url, err := deploy.ClusterIPURL(ctx, client, deploy.Namespace)
	if err != nil {
		return err
	}
	if o.parts[partE2E] && o.e2eN > 0 {
		if err := oneAtATime(ctx, log, client, url, o, rep); err != nil {
			return err
		}
	}
	if o.parts[partQueue] {
		return queueBenchmarks(ctx, log, l, c, client, url, o, rep)
	}
	return nil
}

// oneAtATime POSTs -e2e experiments one after the other, each once the
// one before is Complete, and times each step.
func oneAtATime(ctx context.Context, log *slog.Logger, client kubernetes.Interface, url string, o options, rep *report) error {
	tl := &timeline{seen: map[string]map[string]time.Time{}}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watchPods(wctx, client, tl)
	go watchJobs(wctx, client, tl)
	time.Sleep(time.Second) // let both watches start

	bc, err := gmini.New(url, gmini.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		return err
	}
	var jobs []string
	var starts []time.Time
	for i := range o.e2eN {
		job, start, err := postOne(ctx, bc, i)
		if err != nil {
			return err
		}
		tl.mark(job, stPosted, time.Now())
		err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			_, ok := tl.get(job, stComplete)
			return ok, nil
		})
		if err != nil {
			return fmt.Errorf("experiment %d (job %s) not Complete: %w", i, job, err)
		}
		jobs = append(jobs, job)
		starts = append(starts, start)
		at, _ := tl.get(job, stComplete)
		log.Info("experiment complete", "n", i+1, "job", job, "elapsed", at.Sub(start).Round(time.Millisecond))
	}
	// Per stage: the time from the previous stage seen.
	for _, st := range stages {
		rep.e2eStages = append(rep.e2eStages, stage{name: st})
	}
	for k, job := range jobs {
		tl.mu.Lock()
		steps := stepTimes(starts[k], stages, tl.seen[job])
		tl.mu.Unlock()
		for i, d := range steps {
			if d >= 0 {
				rep.e2eStages[i].d = append(rep.e2eStages[i].d, d)
			}
		}
		done, _ := tl.get(job, stComplete)
		rep.e2eTotal = append(rep.e2eTotal, done.Sub(starts[k]))
	}
	return nil
}

// stepTimes is, per stage, the time from the previous stage seen (the
// first from start) to it; -1 for a stage not seen (e.g. a pod status
// update that a watch did not show). Two watches see their events in their
// own order: a stage seen before the one it follows counts as 0.
func stepTimes(start time.Time, stages []string, seen map[string]time.Time) []time.Duration {
	out := make([]time.Duration, len(stages))
	prev := start
	for i, st := range stages {
		at, ok := seen[st]
		if !ok {
			out[i] = -1
			continue
		}
		if at.Before(prev) {
			at = prev
		}
		out[i] = at.Sub(prev)
		prev = at
	}
	return out
}

func postOne(ctx context.Context, c *gmini.Client, i int) (string, time.Time, error) {
	start := time.Now()
	sub, err := submit(ctx, c, map[string]any{"id": fmt.Sprintf("e2e-bench-%d", i), "key": fmt.Sprintf("k-%d", i)})
	return sub.Job, start, err
}

func watchPods(ctx context.Context, client kubernetes.Interface, tl *timeline) {
	watchLoop(ctx, func(ctx context.Context) (watch.Interface, error) {
		return client.CoreV1().Pods(deploy.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel})
	}, func(obj any, at time.Time) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		job := pod.Labels[batchv1.JobNameLabel]
		tl.mark(job, stPod, at)
		for _, c := range pod.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case corev1.PodScheduled:
				tl.mark(job, stScheduled, at)
			case corev1.PodReadyToStartContainers:
				tl.mark(job, stSandbox, at)
			}
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Terminated != nil {
				tl.mark(job, stExited, at)
			}
		}
	})
}

func watchJobs(ctx context.Context, client kubernetes.Interface, tl *timeline) {
	watchLoop(ctx, func(ctx context.Context) (watch.Interface, error) {
		return client.BatchV1().Jobs(deploy.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
	}, func(obj any, at time.Time) {
		job, ok := obj.(*batchv1.Job)
		if !ok {
			return
		}
		for _, c := range job.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				tl.mark(job.Name, stComplete, at)
			}
		}
	})
}

// watchLoop re-opens a watch that the server closed, until ctx ends; at
// most once every 100 ms so a failing watch cannot spin.
func watchLoop(ctx context.Context, open func(context.Context) (watch.Interface, error), on func(any, time.Time)) {
	for ctx.Err() == nil {
		w, err := open(ctx)
		if err == nil {
			for ev := range w.ResultChan() {
				on(ev.Object, time.Now())
			}
			w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// imageSizes reads each archive's size and its layers' compressed sizes.
func imageSizes(tars []string, rep *report) error {
	for _, t := range tars {
		fi, err := os.Stat(t)
		if err != nil {
			return err
		}
		img, err := tarball.ImageFromPath(t, nil)
		if err != nil {
			return fmt.Errorf("read image %s: %w", t, err)
		}
		layers, err := img.Layers()
		if err != nil {
			return fmt.Errorf("layers of %s: %w", t, err)
		}
		var compressed, uncompressed int64
		for _, l := range layers {
			s, err := l.Size()
			if err != nil {
				return fmt.Errorf("layer size in %s: %w", t, err)
			}
			compressed += s
			rc, err := l.Uncompressed()
			if err != nil {
				return fmt.Errorf("layer of %s: %w", t, err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("read layer of %s: %w", t, err)
			}
			uncompressed += n
		}
		rep.images = append(rep.images, imageSize{name: strings.TrimSuffix(filepath.Base(t), ".tar"),
			archive: fi.Size(), compressed: compressed, uncompressed: uncompressed, layers: len(layers)})
	}
	return nil
}
