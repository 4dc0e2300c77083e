package template

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

func cronJob(ns, name, image string, containers ...string) *batchv1.CronJob {
	if len(containers) == 0 {
		containers = []string{"runner"}
	}
	var cs []corev1.Container
	for _, c := range containers {
		cs = append(cs, corev1.Container{Name: c, Image: image})
	}
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.CronJobSpec{
			Schedule: "@yearly",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{Containers: cs},
			}}},
		},
	}
}

// logLines records what the source logs, for tests that wait for a line.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return nil
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// waitFor polls until cond holds, for changes the informer delivers
// asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startSource(t *testing.T, client *fake.Clientset) (*CronJobSource, *logLines) {
	t.Helper()
	logs := &logLines{}
	src := NewCronJobSource(client, "gmini", "gmini-runner", slog.New(logs))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	src.Start(ctx)
	return src, logs
}

func TestCronJobSource(t *testing.T) {
	client := fake.NewClientset(cronJob("gmini", "gmini-runner", "gmini-runner:v1"))
	src := NewCronJobSource(client, "gmini", "gmini-runner", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := src.JobTemplate()
	if failure.KindOf(err) != failure.Unavailable || !strings.Contains(err.Error(), "gmini/gmini-runner not loaded yet") {
		t.Fatalf("before Start: err = %v, want Unavailable: not loaded yet", err)
	}
	src.Start(ctx)
	if err := src.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	tmpl, err := src.JobTemplate()
	if err != nil {
		t.Fatal(err)
	}
	if got := tmpl.Spec.Template.Spec.Containers[0].Image; got != "gmini-runner:v1" {
		t.Fatalf("image = %q", got)
	}

	// Building a Job from it leaves the cache as it was.
	if _, err := jobspec.Build(tmpl, "gmini", "e1", "h", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if again, _ := src.JobTemplate(); !reflect.DeepEqual(again, tmpl) || again.Spec.Template.Spec.Containers[0].Args != nil {
		t.Fatalf("building a Job changed the cached template: %+v", again.Spec.Template.Spec.Containers[0])
	}

	// A GitOps sync that bumps the image reaches the next Job.
	updated := cronJob("gmini", "gmini-runner", "gmini-runner:v2")
	if _, err := client.BatchV1().CronJobs("gmini").Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the template update", func() bool {
		tmpl, err := src.JobTemplate()
		return err == nil && tmpl.Spec.Template.Spec.Containers[0].Image == "gmini-runner:v2"
	})
}

// TestCronJobSourceUnusable: each way the template can be unusable at
// start-up makes JobTemplate and Check fail with Unavailable, a message
// naming the template and the fault, and one warning in the log.
func TestCronJobSourceUnusable(t *testing.T) {
	withArgs := cronJob("gmini", "gmini-runner", "gmini-runner:v1")
	withArgs.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args = []string{"--fixed"}
	tests := []struct {
		name    string
		objects []runtime.Object
		wantMsg string
	}{
		{"missing", nil, "job template cronjob gmini/gmini-runner does not exist; apply the k8s/runner manifests, or fix --namespace and --template"},
		{"in another namespace", []runtime.Object{cronJob("other", "gmini-runner", "gmini-runner:v1")}, "gmini/gmini-runner does not exist"},
		{"two containers, none named runner", []runtime.Object{cronJob("gmini", "gmini-runner", "img", "main", "sidecar")},
			`job template cronjob gmini/gmini-runner is not usable: no container named "runner" among 2 containers (main, sidecar)`},
		{"runner with args", []runtime.Object{withArgs}, "gmini/gmini-runner is not usable: container \"runner\" sets args [\"--fixed\"], which the experiment replaces; use command for fixed arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src, logs := startSource(t, fake.NewClientset(tt.objects...))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := src.WaitForSync(ctx); err != nil {
				t.Fatal(err)
			}
			for name, err := range map[string]error{"Check": src.Check(), "JobTemplate": func() error { _, err := src.JobTemplate(); return err }()} {
				if failure.KindOf(err) != failure.Unavailable || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("%s: err = %v (kind %q), want Unavailable with %q", name, err, failure.KindOf(err), tt.wantMsg)
				}
			}
			waitFor(t, "the start-up warning", func() bool { return len(logs.all()) > 0 })
			lines := logs.all()
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "WARN job template not usable") || !strings.Contains(lines[0], tt.wantMsg) {
				t.Errorf("log = %q, want one warning containing %q", lines, tt.wantMsg)
			}
		})
	}
}

// TestCronJobSourceFollowsChanges: the informer's events keep readiness and
// the log in step with the CronJob as it is created, broken, fixed and
// deleted, with one line per change.
func TestCronJobSourceFollowsChanges(t *testing.T) {
	client := fake.NewClientset()
	src, logs := startSource(t, client)
	ctx := context.Background()
	cronJobs := client.BatchV1().CronJobs("gmini")

	step := func(what string, change func() error, wantErr string, wantLines int, wantLast string) {
		t.Helper()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		waitFor(t, what, func() bool {
			err := src.Check()
			ok := wantErr == "" && err == nil || wantErr != "" && err != nil && strings.Contains(err.Error(), wantErr)
			return ok && len(logs.all()) >= wantLines
		})
		lines := logs.all()
		if len(lines) != wantLines || !strings.HasPrefix(lines[len(lines)-1], wantLast) {
			t.Fatalf("%s: log = %q, want %d lines, the last starting with %q", what, lines, wantLines, wantLast)
		}
	}
	step("start without the CronJob", func() error { return nil }, "does not exist", 1, "WARN job template not usable")
	step("create it", func() error {
		_, err := cronJobs.Create(ctx, cronJob("gmini", "gmini-runner", "v1"), metav1.CreateOptions{})
		return err
	}, "", 2, "INFO job template usable again")
	step("change the image", func() error {
		_, err := cronJobs.Update(ctx, cronJob("gmini", "gmini-runner", "v2"), metav1.UpdateOptions{})
		return err
	}, "", 2, "INFO job template usable again")
	step("give the runner args", func() error {
		cj := cronJob("gmini", "gmini-runner", "v2")
		cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args = []string{"x"}
		_, err := cronJobs.Update(ctx, cj, metav1.UpdateOptions{})
		return err
	}, "use command for fixed arguments", 3, "WARN job template not usable")
	step("fix it", func() error {
		_, err := cronJobs.Update(ctx, cronJob("gmini", "gmini-runner", "v3"), metav1.UpdateOptions{})
		return err
	}, "", 4, "INFO job template usable again")
	step("delete it", func() error {
		return cronJobs.Delete(ctx, "gmini-runner", metav1.DeleteOptions{})
	}, "does not exist", 5, "WARN job template not usable")
}

// TestCronJobSourceListRefused: while the first list fails, the reason is
// the API server's answer, not a generic "not loaded", and the log says so
// once, not at every retry.
func TestCronJobSourceListRefused(t *testing.T) {
	client := fake.NewClientset()
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "batch", Resource: "cronjobs"}, "",
		errors.New(`User "system:serviceaccount:gmini:gmini-backend" cannot list resource "cronjobs"`))
	client.PrependReactor("list", "cronjobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbidden
	})
	src, logs := startSource(t, client)
	waitFor(t, "the list error", func() bool {
		err := src.Check()
		return err != nil && strings.Contains(err.Error(), "cannot list")
	})
	err := src.Check()
	if failure.KindOf(err) != failure.Unavailable || !strings.HasPrefix(err.Error(), "job template cronjob gmini/gmini-runner not loaded yet: ") {
		t.Errorf("err = %v (kind %q)", err, failure.KindOf(err))
	}
	waitFor(t, "a retry of the list", func() bool { return len(client.Actions()) >= 2 })
	if got := logs.all(); src.HasSynced() || len(got) != 1 || !strings.HasPrefix(got[0], "WARN cannot load the job template") || !strings.Contains(got[0], "cannot list") {
		t.Errorf("synced %v, log %q: want one warning with the API server's reason", src.HasSynced(), got)
	}
}

func TestStatic(t *testing.T) {
	t.Parallel()
	good := cronJob("ns", "t", "img").Spec.JobTemplate
	bad := cronJob("ns", "t", "img", "a", "b").Spec.JobTemplate
	tests := []struct {
		tmpl    *batchv1.JobTemplateSpec
		wantErr string
	}{
		{&good, ""},
		{nil, "job template not loaded yet"},
		{&bad, `job template is not usable: no container named "runner"`},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			_, err := Static{Template: tt.tmpl}.JobTemplate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if failure.KindOf(err) != failure.Unavailable || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want Unavailable with %q", err, tt.wantErr)
			}
		})
	}
}
