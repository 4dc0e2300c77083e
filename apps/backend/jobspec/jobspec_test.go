package jobspec

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestValidateID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id      string
		wantErr string // "" means valid
	}{
		{"aB3dE9xQ2mNpL7", ""},
		{"run_2024.01-a", ""},
		{"0", ""},
		{strings.Repeat("a", MaxIDLength), ""},
		{"", "is empty"},
		{strings.Repeat("a", MaxIDLength+1), "129 characters"},
		{"-a", "must start with a letter or a digit"},
		{"a/b", "'/'"},
		{"expé", "'é'"},
	}
	for _, tt := range tests {
		err := ValidateID(tt.id)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateID(%q) = %v, want nil", tt.id, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateID(%q) = %v, want it to contain %q", tt.id, err, tt.wantErr)
		}
	}
}

func TestJobName(t *testing.T) {
	t.Parallel()
	ids := []string{
		"aB3dE9xQ2mNpL7", "ab3de9xq2mnpl7", "AB3DE9XQ2MNPL7", // case must not collide
		"a.b", "a_b", "a-b", "a--b", "a..b", // punctuation must not collide
		"e1", "E1", "0", "9-", "x_", "---a", "a.-_b",
		strings.Repeat("a", 128), strings.Repeat("a", 127), strings.Repeat("A", 128),
		strings.Repeat("ab", 64), strings.Repeat("a.", 63) + "a",
	}
	seen := map[string]string{}
	for _, id := range ids {
		if err := ValidateID(id); err != nil {
			// IDs that ValidateID rejects never reach JobName; keep the
			// table honest.
			if id != "---a" && id != "9-" && id != "x_" {
				t.Fatalf("test ID %q is invalid: %v", id, err)
			}
		}
		name := JobName(id)
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("JobName(%q) = %q is not a DNS-1123 label: %v", id, name, errs)
		}
		if len(name) > 63 {
			t.Errorf("JobName(%q) = %q has %d characters", id, name, len(name))
		}
		if other, ok := seen[name]; ok {
			t.Errorf("JobName(%q) = JobName(%q) = %q", id, other, name)
		}
		seen[name] = id
		if JobName(id) != name {
			t.Errorf("JobName(%q) is not stable", id)
		}
	}
	if got := JobName("aB3dE9xQ2mNpL7"); !strings.HasPrefix(got, "exp-ab3de9xq2mnpl7-") {
		t.Errorf("JobName keeps no readable part: %q", got)
	}
}

func TestJobNameManyIDs(t *testing.T) {
	t.Parallel()
	seen := make(map[string]int, 100000)
	for i := 0; i < 100000; i++ {
		id := fmt.Sprintf("Exp%06d", i)
		name := JobName(id)
		if j, ok := seen[name]; ok {
			t.Fatalf("IDs %d and %d share the name %q", i, j, name)
		}
		seen[name] = i
	}
}

func podTemplate(names ...string) corev1.PodTemplateSpec {
	var cs []corev1.Container
	for _, n := range names {
		cs = append(cs, corev1.Container{Name: n, Image: n + ":dev"})
	}
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: cs}}
}

func TestRunnerIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		containers []string
		want       int
		wantErr    string
	}{
		{"runner alone", []string{"runner"}, 0, ""},
		{"runner after a sidecar", []string{"log-shipper", "runner"}, 1, ""},
		{"single container of another name", []string{"main"}, 0, ""},
		{"several, none named runner", []string{"a", "b"}, -1, `no container named "runner" among 2 containers (a, b)`},
		{"no containers", nil, -1, "no containers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := podTemplate(tt.containers...).Spec
			got, err := RunnerIndex(&spec)
			if got != tt.want {
				t.Errorf("RunnerIndex = %d, want %d", got, tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckTemplate(t *testing.T) {
	t.Parallel()
	withArgs := podTemplate("runner")
	withArgs.Spec.Containers[0].Args = []string{"--verbose"}
	withCommand := podTemplate("runner")
	withCommand.Spec.Containers[0].Command = []string{"/runner", "--verbose"}
	sidecarArgs := podTemplate("runner", "proxy")
	sidecarArgs.Spec.Containers[1].Args = []string{"--port=1"}
	tests := []struct {
		name    string
		tmpl    *batchv1.JobTemplateSpec
		wantErr string
	}{
		{"usable", &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("runner")}}, ""},
		{"command is fine", &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: withCommand}}, ""},
		{"a sidecar's args are its own", &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: sidecarArgs}}, ""},
		{"runner sets args", &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: withArgs}}, "use command for fixed arguments"},
		{"no runner", &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("a", "b")}}, `no container named "runner"`},
		{"nil", nil, "no job template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckTemplate(tt.tmpl)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	const (
		id   = "Exp.1"
		hash = "0123abcd"
		body = `{"experiment":{"id":"Exp.1","key":"k"}}`
	)
	withArgs := podTemplate("runner")
	withArgs.Spec.Containers[0].Args = []string{"x"}
	tests := []struct {
		name    string
		tmpl    batchv1.JobTemplateSpec
		id      string
		want    *batchv1.Job
		wantErr string
	}{
		{
			name: "runner container",
			tmpl: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("runner")}},
			id:   id,
			want: &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{
					Name: JobName(id), Namespace: "ns1",
					Labels:      map[string]string{LabelApp: LabelAppValue, LabelManagedBy: LabelManagedByName},
					Annotations: map[string]string{AnnotationID: id, AnnotationHash: hash},
				},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{
						Labels:      map[string]string{LabelApp: LabelAppValue},
						Annotations: map[string]string{AnnotationID: id},
					},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner", Image: "runner:dev", Args: []string{body}}}},
				}},
			},
		},
		{
			name: "runner among sidecars, template metadata kept",
			tmpl: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "ml"}, Annotations: map[string]string{"note": "x"}},
				Spec:       batchv1.JobSpec{Template: podTemplate("log-shipper", "runner")},
			},
			id: id,
			want: &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{
					Name: JobName(id), Namespace: "ns1",
					Labels:      map[string]string{"team": "ml", LabelApp: LabelAppValue, LabelManagedBy: LabelManagedByName},
					Annotations: map[string]string{"note": "x", AnnotationID: id, AnnotationHash: hash},
				},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{
						Labels:      map[string]string{LabelApp: LabelAppValue},
						Annotations: map[string]string{AnnotationID: id},
					},
					Spec: corev1.PodSpec{Containers: []corev1.Container{
						{Name: "log-shipper", Image: "log-shipper:dev"},
						{Name: "runner", Image: "runner:dev", Args: []string{body}},
					}},
				}},
			},
		},
		{
			name: "single container of another name",
			tmpl: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("main")}},
			id:   id,
			want: &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{
					Name: JobName(id), Namespace: "ns1",
					Labels:      map[string]string{LabelApp: LabelAppValue, LabelManagedBy: LabelManagedByName},
					Annotations: map[string]string{AnnotationID: id, AnnotationHash: hash},
				},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{
						Labels:      map[string]string{LabelApp: LabelAppValue},
						Annotations: map[string]string{AnnotationID: id},
					},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "main:dev", Args: []string{body}}}},
				}},
			},
		},
		{name: "no runner among several", tmpl: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("a", "b")}}, id: id, wantErr: `no container named "runner"`},
		{name: "runner with args of its own", tmpl: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: withArgs}}, id: id, wantErr: "use command"},
		{name: "invalid ID", tmpl: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("runner")}}, id: "a/b", wantErr: "'/'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			orig := tt.tmpl.DeepCopy()
			job, err := Build(&tt.tmpl, "ns1", tt.id, hash, []byte(body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, job); diff != "" {
				t.Errorf("Build (-want +got):\n%s", diff)
			}
			// The template belongs to the informer cache: it must not change.
			if diff := cmp.Diff(orig, &tt.tmpl); diff != "" {
				t.Errorf("Build modified the template (-before +after):\n%s", diff)
			}
			// What Build makes, Owns recognises, under the same ID.
			if got, ok := Owns(job); !ok || got != tt.id {
				t.Errorf("Owns(Build(%q)) = %q, %v", tt.id, got, ok)
			}
		})
	}
}

func TestOwns(t *testing.T) {
	t.Parallel()
	job := func(name string, labels, annotations map[string]string) *batchv1.Job {
		return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
	}
	managed := map[string]string{LabelManagedBy: LabelManagedByName}
	tests := []struct {
		name   string
		job    *batchv1.Job
		wantID string
		wantOK bool
	}{
		{"gmini's", job(JobName("Exp1"), managed, map[string]string{AnnotationID: "Exp1"}), "Exp1", true},
		{"no managed-by label", job(JobName("Exp1"), nil, map[string]string{AnnotationID: "Exp1"}), "", false},
		{"managed by someone else", job(JobName("Exp1"), map[string]string{LabelManagedBy: "helm"}, map[string]string{AnnotationID: "Exp1"}), "", false},
		{"no ID annotation", job(JobName("Exp1"), managed, nil), "", false},
		{"empty ID annotation", job("exp-x", managed, map[string]string{AnnotationID: ""}), "", false},
		{"invalid ID annotation", job(JobName("a/b"), managed, map[string]string{AnnotationID: "a/b"}), "", false},
		{"annotation edited to another ID", job(JobName("Exp1"), managed, map[string]string{AnnotationID: "Exp2"}), "", false},
		{"annotation differs only in case", job(JobName("Exp1"), managed, map[string]string{AnnotationID: "exp1"}), "", false},
		{"nil", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, ok := Owns(tt.job)
			if id != tt.wantID || ok != tt.wantOK {
				t.Errorf("Owns = %q, %v; want %q, %v", id, ok, tt.wantID, tt.wantOK)
			}
		})
	}
}
