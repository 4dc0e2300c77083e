//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"slices"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// access is one question to the authorizer about the backend's identity.
type access struct {
	verb, group, resource, subresource, name, namespace string
	allowed                                             bool
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.name != "" {
		r += " " + a.name
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	return fmt.Sprintf("%s %s %s", a.verb, r, where)
}

// used is exactly what the backend calls, resource by resource: the
// verbs it uses and, for names it is limited to, that name. Every other
// verb on these resources must be denied (exactGrid), so the Role holds
// what the code uses and nothing more.
var used = []struct {
	group, resource, sub, name string
	verbs                      []string
}{
	{"batch", "jobs", "", "exp-x", []string{"create", "get", "list", "watch", "patch", "delete"}},
	{"batch", "cronjobs", "", "gmini-runner", []string{"list", "watch"}},
	{"", "pods", "", "exp-x-abcde", []string{"list", "watch"}},
	{"", "pods", "log", "exp-x-abcde", []string{"get"}},
	{"coordination.k8s.io", "leases", "", "gmini-backend-recorder", []string{"create", "get", "update"}},
}

// exactGrid asks about every verb on every resource the backend uses.
func exactGrid() []access {
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	var out []access
	for _, u := range used {
		for _, v := range verbs {
			name := u.name
			if v == "create" || v == "deletecollection" {
				name = "" // not named in the request
			}
			out = append(out, access{v, u.group, u.resource, u.sub, name, ns, slices.Contains(u.verbs, v)})
		}
	}
	// Names it is not limited to stay out of reach.
	out = append(out,
		access{"update", "coordination.k8s.io", "leases", "", "other-lease", ns, false},
		access{"get", "batch", "cronjobs", "", "other", ns, false},
		access{"list", "batch", "cronjobs", "", "", ns, false}, // without the name selector
	)
	return out
}

// backendAccess is exactly what the backend needs (allowed, and every
// other verb on the same resources denied) and what matters most that it
// cannot do (denied). Denied entries are the ways a compromised backend
// could widen its reach: read credentials, run arbitrary pods, act outside
// its namespace, or grant itself more.
func backendAccess() []access {
	deny := func(verb, group, resource, sub, name, ns string) access {
		return access{verb, group, resource, sub, name, ns, false}
	}
	return append(exactGrid(), []access{
		// Credentials.
		deny("get", "", "secrets", "", "any", ns),
		deny("list", "", "secrets", "", "", ns),
		deny("watch", "", "secrets", "", "", ns),
		deny("list", "", "secrets", "", "", ""),
		deny("get", "", "configmaps", "", "any", ns),
		deny("create", "", "serviceaccounts", "token", "gmini-backend", ns),
		deny("create", "", "serviceaccounts", "token", "gmini-runner", ns),
		deny("impersonate", "", "serviceaccounts", "", "gmini-runner", ns),
		// Running arbitrary code.
		deny("create", "", "pods", "exec", "exp-x-abcde", ns),
		deny("create", "", "pods", "attach", "exp-x-abcde", ns),
		deny("create", "", "pods", "ephemeralcontainers", "exp-x-abcde", ns),
		deny("patch", "", "pods", "ephemeralcontainers", "exp-x-abcde", ns),
		deny("create", "apps", "deployments", "", "", ns),
		deny("patch", "apps", "deployments", "", "gmini-backend", ns),
		// Changing its own template or the runner's: exactGrid denies every
		// verb but list and watch on the template.
		// Outside its namespace.
		deny("create", "batch", "jobs", "", "", "default"),
		deny("create", "batch", "jobs", "", "", "kube-system"),
		deny("list", "batch", "jobs", "", "", ""),
		deny("get", "", "pods", "log", "any", "kube-system"),
		deny("list", "", "pods", "", "", ""),
		deny("list", "", "nodes", "", "", ""),
		deny("create", "", "namespaces", "", "", ""),
		// Granting itself more.
		deny("update", "rbac.authorization.k8s.io", "roles", "", "job-creator", ns),
		deny("patch", "rbac.authorization.k8s.io", "roles", "", "job-creator", ns),
		deny("delete", "rbac.authorization.k8s.io", "roles", "", "job-creator", ns),
		deny("escalate", "rbac.authorization.k8s.io", "roles", "", "job-creator", ns),
		deny("bind", "rbac.authorization.k8s.io", "roles", "", "job-creator", ns),
		deny("bind", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin", ""),
		deny("create", "rbac.authorization.k8s.io", "roles", "", "", ns),
		deny("create", "rbac.authorization.k8s.io", "rolebindings", "", "", ns),
		deny("patch", "rbac.authorization.k8s.io", "rolebindings", "", "job-creator", ns),
		deny("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""),
		deny("patch", "", "namespaces", "", ns, ""), // would lift Pod Security
		deny("create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""),
	}...)
}

func TestBackendRBAC(t *testing.T) {
	f := features.New("the backend's ServiceAccount can do what it needs and nothing that matters more").
		Assess("SubjectAccessReview answers as the Role says", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for _, a := range backendAccess() {
				sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User:   backendUser,
					Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
					ResourceAttributes: &authorizationv1.ResourceAttributes{
						Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
						Name: a.name, Namespace: a.namespace,
					},
				}}
				if a.verb == "list" || a.verb == "watch" {
					if a.name != "" {
						// A list by name is authorized from its field
						// selector, as the backend's informer sends it.
						sar.Spec.ResourceAttributes.FieldSelector = &authorizationv1.FieldSelectorAttributes{RawSelector: "metadata.name=" + a.name}
					}
				}
				res, err := suite.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("SubjectAccessReview %s: %v", a, err)
				}
				if res.Status.Allowed != a.allowed {
					t.Errorf("%s: allowed=%t, want %t (%s %s)", a, res.Status.Allowed, a.allowed, res.Status.Reason, res.Status.EvaluationError)
				}
			}
			t.Logf("%d access questions answered as expected", len(backendAccess()))
			return ctx
		}).
		Assess("real calls with the backend's token are allowed or forbidden", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			sa := suite.sa
			dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
			runnerJob := func(namespace string) *batchv1.Job {
				return &batchv1.Job{
					ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: namespace},
					Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers:    []corev1.Container{{Name: "runner", Image: "gmini-runner:dev"}},
					}}},
				}
			}
			calls := []struct {
				name    string
				allowed bool
				call    func() error
			}{
				{"get cronjob gmini-runner (the informer only lists and watches)", false, func() error {
					_, err := sa.BatchV1().CronJobs(ns).Get(ctx, "gmini-runner", metav1.GetOptions{})
					return err
				}},
				{"list cronjobs with the informer's field selector", true, func() error {
					_, err := sa.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "gmini-runner").String()})
					return err
				}},
				{"list cronjobs without a field selector", false, func() error {
					_, err := sa.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
					return err
				}},
				{"list jobs", true, func() error {
					_, err := sa.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
					return err
				}},
				{"create a job (dry run)", true, func() error {
					_, err := sa.BatchV1().Jobs(ns).Create(ctx, runnerJob(ns), dry)
					return err
				}},
				{"list pods", true, func() error {
					_, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
					return err
				}},
				{"list secrets", false, func() error {
					_, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
					return err
				}},
				{"get a secret", false, func() error {
					_, err := sa.CoreV1().Secrets("kube-system").Get(ctx, "any", metav1.GetOptions{})
					return err
				}},
				{"create a pod (dry run)", false, func() error {
					p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: ns}, Spec: runnerJob(ns).Spec.Template.Spec}
					_, err := sa.CoreV1().Pods(ns).Create(ctx, p, dry)
					return err
				}},
				{"create a job in default (dry run)", false, func() error {
					_, err := sa.BatchV1().Jobs("default").Create(ctx, runnerJob("default"), dry)
					return err
				}},
				{"create a job in kube-system (dry run)", false, func() error {
					_, err := sa.BatchV1().Jobs("kube-system").Create(ctx, runnerJob("kube-system"), dry)
					return err
				}},
				{"patch its own Role to allow everything (dry run)", false, func() error {
					patch := []byte(`{"rules":[{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]}`)
					_, err := sa.RbacV1().Roles(ns).Patch(ctx, "job-creator", types.MergePatchType, patch, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
					return err
				}},
				{"bind itself to admin (dry run)", false, func() error {
					rb := &rbacv1.RoleBinding{
						ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: ns},
						RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
						Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: backendSA, Namespace: ns}},
					}
					_, err := sa.RbacV1().RoleBindings(ns).Create(ctx, rb, dry)
					return err
				}},
				{"delete the template", false, func() error {
					return sa.BatchV1().CronJobs(ns).Delete(ctx, "gmini-runner", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
				}},
			}
			for _, c := range calls {
				err := c.call()
				switch {
				case c.allowed && err != nil:
					t.Errorf("%s as %s: %v, want allowed", c.name, backendUser, err)
				case !c.allowed && !apierrors.IsForbidden(err):
					t.Errorf("%s as %s: err %v, want 403 Forbidden", c.name, backendUser, err)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
