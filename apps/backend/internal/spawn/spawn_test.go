package spawn

import (
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
)

func TestBuildJob(t *testing.T) {
	exp, err := experiment.Decode(strings.NewReader(`{"experiment": {"id": "Exp.1", "key": "k"}}`))
	if err != nil {
		t.Fatal(err)
	}
	pod := func(names ...string) corev1.PodTemplateSpec {
		var cs []corev1.Container
		for _, n := range names {
			cs = append(cs, corev1.Container{Name: n, Image: n + ":dev"})
		}
		return corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: cs}}
	}
	tests := []struct {
		name     string
		tmpl     batchv1.JobTemplateSpec
		wantArgs int // index of the container that gets the experiment
		wantErr  string
	}{
		{"runner container", batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: pod("runner")}}, 0, ""},
		{"runner among sidecars", batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: pod("log-shipper", "runner")}}, 1, ""},
		{"single container of another name", batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: pod("main")}}, 0, ""},
		{"no runner among several", batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: pod("a", "b")}}, 0, `no container named "runner"`},
		{"template labels kept", batchv1.JobTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "ml"}, Annotations: map[string]string{"note": "x"}},
			Spec: batchv1.JobSpec{Template: pod("runner")}}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := tt.tmpl.DeepCopy()
			job, err := BuildJob(&tt.tmpl, "ns1", exp)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if job.Name != experiment.JobName("Exp.1") || job.Namespace != "ns1" {
				t.Errorf("name %s/%s", job.Namespace, job.Name)
			}
			if job.Labels[LabelApp] != LabelAppValue || job.Labels[LabelManagedBy] != LabelManagedByName ||
				job.Spec.Template.Labels[LabelApp] != LabelAppValue {
				t.Errorf("labels job %v pod %v", job.Labels, job.Spec.Template.Labels)
			}
			if job.Annotations[AnnotationID] != "Exp.1" || job.Annotations[AnnotationHash] != exp.Hash {
				t.Errorf("annotations %v", job.Annotations)
			}
			for k, v := range tt.tmpl.Labels {
				if job.Labels[k] != v {
					t.Errorf("template label %s lost", k)
				}
			}
			for i, c := range job.Spec.Template.Spec.Containers {
				if i == tt.wantArgs {
					if len(c.Args) != 1 || c.Args[0] != string(exp.Body) {
						t.Errorf("container %s args = %q", c.Name, c.Args)
					}
				} else if len(c.Args) != 0 {
					t.Errorf("container %s got args %q", c.Name, c.Args)
				}
			}
			// The template belongs to the informer cache: it must not change.
			if tt.tmpl.Labels[LabelManagedBy] != "" || len(tt.tmpl.Spec.Template.Spec.Containers[0].Args) != 0 ||
				len(orig.Labels) != len(tt.tmpl.Labels) {
				t.Errorf("BuildJob modified the template")
			}
		})
	}
}
