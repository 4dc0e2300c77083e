//go:build e2e

package reliability

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// tokenMountPath is where the ServiceAccount admission plugin mounts the
// API token.
const tokenMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenMounts lists what in pod would give a container an API token: a
// projected ServiceAccountToken (or a legacy token Secret) volume and the
// mounts of it.
func tokenMounts(pod *corev1.Pod) []string {
	var found []string
	tokenVolumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					tokenVolumes[v.Name] = true
					found = append(found, "projected token volume "+v.Name)
				}
			}
		case v.Secret != nil && strings.Contains(v.Secret.SecretName, "token"):
			tokenVolumes[v.Name] = true
			found = append(found, "token secret volume "+v.Name)
		}
	}
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range all {
		for _, m := range c.VolumeMounts {
			if tokenVolumes[m.Name] || m.MountPath == tokenMountPath {
				found = append(found, "container "+c.Name+" mounts "+m.Name+" at "+m.MountPath)
			}
		}
	}
	return found
}

func TestRunnerPodHasNoToken(t *testing.T) {
	f := features.New("runner pods get no ServiceAccount token; the backend's pod does").
		Setup(backendAndNoJobs).
		Assess("the pod the Job controller makes for an experiment has no token", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c, err := api(t, suite.backend.URL()).Submit(ctx, experiment("token-check", ""))
			if err != nil || !c.Created {
				failf(t, "POST: %+v %v, want 201", c, err)
			}
			// No node runs it, but the Job controller still creates the
			// pod object, and admission (ServiceAccount, Pod Security)
			// has already shaped it.
			var pod *corev1.Pod
			err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				pods, err := suite.admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + c.Job})
				if err != nil || len(pods.Items) == 0 {
					return false, nil
				}
				pod = &pods.Items[0]
				return true, nil
			})
			if err != nil {
				t.Fatalf("no pod for Job %s after a minute: %v", c.Job, err)
			}
			if pod.Spec.ServiceAccountName != "gmini-runner" {
				t.Errorf("pod %s runs as ServiceAccount %q, want gmini-runner", pod.Name, pod.Spec.ServiceAccountName)
			}
			if am := pod.Spec.AutomountServiceAccountToken; am == nil || *am {
				t.Errorf("pod %s: automountServiceAccountToken = %v, want false", pod.Name, am)
			}
			if found := tokenMounts(pod); len(found) > 0 {
				t.Errorf("pod %s has an API token: %v", pod.Name, found)
			}
			sa, err := suite.admin.CoreV1().ServiceAccounts(ns).Get(ctx, "gmini-runner", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get ServiceAccount gmini-runner: %v", err)
			}
			if am := sa.AutomountServiceAccountToken; am == nil || *am {
				t.Errorf("ServiceAccount gmini-runner: automountServiceAccountToken = %v, want false", am)
			}
			t.Logf("runner pod %s: no token volume, no token mount", pod.Name)
			return ctx
		}).
		Assess("the same check finds the token in the backend's pod, which needs it", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Shows that tokenMounts would notice a token: the backend's
			// pod gets one injected by the same admission plugin.
			d, err := suite.admin.AppsV1().Deployments(ns).Get(ctx, "gmini-backend", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get Deployment gmini-backend: %v", err)
			}
			pod, err := dryRunPod(ctx, podFrom("token-contrast", d.Spec.Template))
			if err != nil {
				t.Fatalf("dry-run backend pod: %v", err)
			}
			found := tokenMounts(pod)
			if len(found) < 2 {
				t.Errorf("backend pod: token volume and mount %v, want both (it talks to the API server)", found)
			}
			t.Logf("backend pod, for contrast: %v", found)
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
