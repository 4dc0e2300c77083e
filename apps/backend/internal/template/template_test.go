package template

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func cronJob(ns, name, image string) *batchv1.CronJob {
	return &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.CronJobSpec{
			Schedule: "@yearly",
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner", Image: image}}},
			}}},
		},
	}
}

func TestCronJobSource(t *testing.T) {
	client := fake.NewClientset(cronJob("gmini", "gmini-runner", "gmini-runner:v1"))
	src := NewCronJobSource(client, "gmini", "gmini-runner")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := src.JobTemplate(); err != ErrNotSynced {
		t.Fatalf("before Start: err = %v, want ErrNotSynced", err)
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

	// The caller owns the copy: changing it must not change the cache.
	tmpl.Spec.Template.Spec.Containers[0].Image = "changed"
	again, _ := src.JobTemplate()
	if got := again.Spec.Template.Spec.Containers[0].Image; got != "gmini-runner:v1" {
		t.Fatalf("cache was modified through a returned template: %q", got)
	}

	// A GitOps sync that bumps the image reaches the next Job.
	updated := cronJob("gmini", "gmini-runner", "gmini-runner:v2")
	if _, err := client.BatchV1().CronJobs("gmini").Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tmpl, err := src.JobTemplate()
		if err == nil && tmpl.Spec.Template.Spec.Containers[0].Image == "gmini-runner:v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("template update not seen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCronJobSourceMissing(t *testing.T) {
	client := fake.NewClientset()
	src := NewCronJobSource(client, "gmini", "gmini-runner")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src.Start(ctx)
	if err := src.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := src.JobTemplate()
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("err = %v, want a message that the template does not exist", err)
	}
}
