// Package apitest serves the backend's real HTTP handler for the tests of
// its clients (package client, the gmini command).
package apitest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle/lifecycletest"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// Namespace is the namespace the served experiments live in.
const Namespace = "gmini-test"

// Server is the real HTTP handler, with history in SQLite, over a fake
// clientset: clients are tested against the server's own answers.
func Server(t *testing.T) *httptest.Server {
	t.Helper()
	return Backend(t).Server
}

// Env is the served backend and what a test controls of it: the
// cluster's objects, and the runners' logs as they are written (the fake
// clientset cannot follow a log).
type Env struct {
	*httptest.Server
	Kube    *fake.Clientset
	Logs    *lifecycletest.Logs
	History history.Store
}

// Backend is Server with its cluster and logs.
func Backend(t *testing.T) *Env {
	t.Helper()
	gin.SetMode(gin.TestMode)
	kube := fake.NewClientset()
	logs := lifecycletest.NewLogs()
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	tmpl := &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers:    []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
	}}}}
	h := api.NewHandler(api.Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: kube, Namespace: Namespace, Templates: template.Static{Template: tmpl}, Hold: true},
			Live:    &lifecycle.Store{Client: kube, Namespace: Namespace, PodLogs: logs},
			History: store,
		},
		Metrics:    metrics.New(),
		Logger:     slog.New(slog.DiscardHandler),
		Ready:      func(context.Context) error { return nil },
		APITimeout: 5 * time.Second,
		FollowPoll: 5 * time.Millisecond,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Env{Server: srv, Kube: kube, Logs: logs, History: store}
}

// Attempt makes pod an attempt of experiment id's Job, created sec seconds
// after the epoch: its runner running (exit < 0) or ended with exit.
func (e *Env) Attempt(t *testing.T, id, pod string, sec int64, exit int32) {
	t.Helper()
	ctx := context.Background()
	jobs := e.Kube.BatchV1().Jobs(Namespace)
	job, err := jobs.Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if job.UID == "" { // the fake clientset sets none; pods are found by it
		job.UID = types.UID("uid-" + job.Name)
		if job, err = jobs.Update(ctx, job, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cs := corev1.ContainerStatus{Name: "runner", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	phase := corev1.PodRunning
	if exit >= 0 {
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit}}
		phase = corev1.PodSucceeded
		if exit > 0 {
			phase = corev1.PodFailed
		}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: Namespace, UID: types.UID("uid-" + pod),
			CreationTimestamp: metav1.Unix(sec, 0),
			Labels:            map[string]string{batchv1.ControllerUidLabel: string(job.UID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
				Controller: new(true)}},
		},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{cs}},
	}
	pods := e.Kube.CoreV1().Pods(Namespace)
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// Finish marks experiment id's Job finished: Complete, or Failed.
func (e *Env) Finish(t *testing.T, id string, succeeded bool) {
	t.Helper()
	ctx := context.Background()
	job, err := e.Kube.BatchV1().Jobs(Namespace).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := batchv1.JobFailed
	if succeeded {
		cond = batchv1.JobComplete
	}
	job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: cond, Status: corev1.ConditionTrue, Reason: "Done"})
	if _, err := e.Kube.BatchV1().Jobs(Namespace).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
