//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/tools/backendproc"
)

// templateBreak is one way to make the template unusable, and what the
// backend must then say.
type templateBreak struct {
	name   string
	change func(cj *batchv1.CronJob) // nil: delete the template
	want   string                    // in /readyz's and POST's error
}

func templateBreaks() []templateBreak {
	return []templateBreak{
		{name: "template deleted", want: ns + "/" + templateName},
		{name: "two containers, none named runner", want: "runner", change: func(cj *batchv1.CronJob) {
			pod := &cj.Spec.JobTemplate.Spec.Template.Spec
			pod.Containers[0].Name = "main"
			side := *pod.Containers[0].DeepCopy()
			side.Name = "sidecar"
			pod.Containers = append(pod.Containers, side)
			// The pod failure policy names the runner container.
			cj.Spec.JobTemplate.Spec.PodFailurePolicy.Rules[0].OnExitCodes.ContainerName = nil
		}},
		{name: "runner sets args", want: "args", change: func(cj *batchv1.CronJob) {
			cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args = []string{"--fixed"}
		}},
	}
}

// readyAnswer polls /readyz until it answers want, and returns that answer
// (raw: the probes are no part of the Go client's API).
func readyAnswer(ctx context.Context, t *testing.T, base string, want int) answer {
	t.Helper()
	var last answer
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		a, err := get(ctx, newClient(1, false), base+"/readyz")
		last = a
		return err == nil && a.Code == want, nil
	})
	if err != nil {
		failf(t, "/readyz did not answer %d within 30 s; last %s", want, last)
	}
	return last
}

func TestReadinessFollowsTemplate(t *testing.T) {
	var original *batchv1.CronJob
	f := features.New("readiness means a POST would work: an unusable template gives /readyz 503 and POST 503 with the reason").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			cj, err := suite.admin.BatchV1().CronJobs(ns).Get(ctx, templateName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			original = cj
			return ctx
		})
	for i, b := range templateBreaks() {
		f = f.Assess(b.name+": not ready, POST 503 naming the problem, nothing created; fixed: ready again", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			cjs := suite.admin.BatchV1().CronJobs(ns)
			if b.change == nil {
				if err := cjs.Delete(ctx, templateName, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			} else {
				cj, err := cjs.Get(ctx, templateName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				b.change(cj)
				if _, err := cjs.Update(ctx, cj, metav1.UpdateOptions{}); err != nil {
					t.Fatalf("break the template: %v", err)
				}
			}
			a := readyAnswer(ctx, t, base, http.StatusServiceUnavailable)
			checkError(t, "/readyz", a, http.StatusServiceUnavailable, b.want)
			if a.Header.Get("Retry-After") == "" {
				t.Error("/readyz 503 without Retry-After")
			}
			c := api(t, base)
			_, err := c.Submit(ctx, experiment(fmt.Sprintf("ready-broken-%d", i), ""))
			if err != nil && gmini.StatusCode(err) == 0 {
				failf(t, "POST: %v", err)
			}
			if e := checkRefused(t, "POST with an unusable template", err, http.StatusServiceUnavailable, b.want); e != nil && e.RetryAfter == 0 {
				t.Error("POST 503 without Retry-After")
			}
			if n := allJobs(ctx, t); n != 0 {
				t.Errorf("%d Jobs after a refused POST", n)
			}
			// Fix it, as a GitOps sync would: the backend needs no restart.
			if b.change == nil {
				restore := original.DeepCopy()
				restore.ResourceVersion, restore.UID = "", ""
				if _, err := cjs.Create(ctx, restore, metav1.CreateOptions{}); err != nil {
					t.Fatalf("recreate the template: %v", err)
				}
			} else {
				cj, err := cjs.Get(ctx, templateName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				cj.Spec = original.Spec
				if _, err := cjs.Update(ctx, cj, metav1.UpdateOptions{}); err != nil {
					t.Fatalf("restore the template: %v", err)
				}
			}
			readyAnswer(ctx, t, base, http.StatusOK)
			if sub, err := c.Submit(ctx, experiment(fmt.Sprintf("ready-fixed-%d", i), "")); err != nil || !sub.Created {
				failf(t, "POST after the template was fixed: %+v %v, want 201", sub, err)
			}
			deleteJobs(ctx, t)
			return ctx
		})
	}
	testenv.Test(t, f.Feature())
}

func TestStartWithoutTemplate(t *testing.T) {
	for _, c := range []struct {
		name, namespace, template string
	}{
		// The backend's Role holds only in its own namespace: there the
		// list is forbidden, which is the reason to report.
		{"namespace that does not exist", "no-such-namespace", templateName},
		{"template that does not exist", ns, "no-such-template"},
	} {
		want := c.namespace + "/" + c.template
		f := features.New("a backend started with a "+c.name+" serves /healthz, is not ready and refuses POSTs with the reason").
			Assess("503 with the reason, and a warning in the log", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
				logPath := filepath.Join(suite.layout.Logs(clusterName), "backend-"+strings.ReplaceAll(c.name, " ", "-")+".log")
				_ = os.Remove(logPath)
				b := backendproc.New(backendproc.Options{
					Binary:   suite.backendBin,
					LogPath:  logPath,
					Log:      logger,
					NotReady: true,
					Args: append([]string{"--kubeconfig", suite.backendKubeconfig, "--listen", "127.0.0.1:0", "--log-format", "text",
						"--api-timeout", apiTimeout.String()}, "--namespace", c.namespace, "--template", c.template),
				})
				if err := b.Start(ctx); err != nil {
					t.Fatal(err)
				}
				defer b.Stop(context.WithoutCancel(ctx))
				if a, err := get(ctx, newClient(1, false), b.URL()+"/healthz"); err != nil || a.Code != http.StatusOK {
					t.Errorf("/healthz = %v %v, want 200", a, err)
				}
				a := readyAnswer(ctx, t, b.URL(), http.StatusServiceUnavailable)
				checkError(t, "/readyz", a, http.StatusServiceUnavailable, want)
				_, err := api(t, b.URL()).Submit(ctx, experiment("no-template", ""))
				if err != nil && gmini.StatusCode(err) == 0 {
					t.Fatal(err)
				}
				checkRefused(t, "POST", err, http.StatusServiceUnavailable, want)
				// A warning names the template, once the first list arrived
				// or failed.
				warned := func(line string) bool {
					return strings.Contains(line, "level=WARN") && strings.Contains(line, "namespace="+c.namespace) &&
						strings.Contains(line, "template="+c.template)
				}
				err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
					return slices.ContainsFunc(strings.Split(b.LogTail(50), "\n"), warned), nil
				})
				if err != nil {
					t.Errorf("no warning naming %s in the log:\n%s", want, b.LogTail(20))
				}
				return ctx
			}).Feature()
		testenv.Test(t, f)
	}
}
