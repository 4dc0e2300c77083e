//go:build e2e

package reliability

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/manifests"
)

// applyAuth installs what overlays with --auth kubernetes carry (k8s/auth:
// the client roles and the backend's auth-delegator binding), bound to the
// dev namespace's backend.
func applyAuth(ctx context.Context, t *testing.T) {
	t.Helper()
	objs, err := manifests.Objects(suite.layout.Path("k8s", "auth"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "ClusterRole":
			var cr rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr); err != nil {
				t.Fatal(err)
			}
			if _, err := suite.admin.RbacV1().ClusterRoles().Create(ctx, &cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		case "ClusterRoleBinding":
			var crb rbacv1.ClusterRoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crb); err != nil {
				t.Fatal(err)
			}
			crb.Subjects[0].Namespace = ns // an overlay's kustomize sets it
			if _, err := suite.admin.RbacV1().ClusterRoleBindings().Create(ctx, &crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
}

// client is a ServiceAccount of the namespace, bound to role ("" for none),
// with a token for audience.
func client(ctx context.Context, t *testing.T, name, role, audience string) (user, token string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := suite.admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if role != "" {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + role, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		}
		if _, err := suite.admin.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}
	if audience != "" {
		spec.Audiences = []string{audience}
	}
	tr, err := suite.admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return "system:serviceaccount:" + ns + ":" + name, tr.Status.Token
}

func TestAuthentication(t *testing.T) {
	f := features.New("with --auth kubernetes the API server decides: 401 without a good token, 403 without the role, the caller kept on the Job").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			applyAuth(ctx, t)
			return ctx
		}).
		Assess("each caller gets what RBAC says", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			b := extraBackend(ctx, t, "auth", "--auth", "kubernetes")
			base := b.URL()
			submitter, submitterToken := client(ctx, t, "frontend", "gmini-submitter", "gmini")
			viewer, viewerToken := client(ctx, t, "dashboard", "gmini-viewer", "gmini")
			_, cancellerToken := client(ctx, t, "operator", "gmini-canceller", "gmini")
			stranger, strangerToken := client(ctx, t, "stranger", "", "gmini")
			_, apiToken := client(ctx, t, "frontend", "", "") // a token for the API server, not for gmini
			body := experimentBody("auth-1", "")
			as := func(token string) *gmini.Client { return api(t, base, gmini.WithToken(token)) }

			// Raw: the test reads the 401's WWW-Authenticate header, which
			// the Go client's errors do not keep.
			for _, c := range []struct {
				name, token string
				want        int
				msg         string
			}{
				{"no token", "", 401, "authentication required"},
				{"a made-up token", "not-a-token", 401, "authentication required"},
				{"the submitter's token for the API server's audience", apiToken, 401, "authentication required"},
				{"a ServiceAccount without a role", strangerToken, 403, `user "` + stranger + `" may not create experiments.gmini.dev in namespace ` + ns},
				{"a viewer", viewerToken, 403, `user "` + viewer + `" may not create`},
			} {
				a := call(ctx, t, http.MethodPost, base+"/experiment", c.token, body)
				checkError(t, "POST by "+c.name, a, c.want, c.msg)
				if c.want == 401 && a.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("POST by %s: 401 without WWW-Authenticate", c.name)
				}
			}
			if n := allJobs(ctx, t); n != 0 {
				t.Errorf("%d Jobs after refused POSTs, want 0", n)
			}

			if sub, err := as(submitterToken).Submit(ctx, experiment("auth-1", "")); err != nil || !sub.Created {
				failf(t, "POST by the submitter = %+v %v, want 201", sub, err)
			}
			job, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName("auth-1"), metav1.GetOptions{})
			if err != nil || job.Annotations[jobspec.AnnotationSubmitter] != submitter {
				t.Errorf("Job annotations %v (%v), want %s=%s", job.Annotations, err, jobspec.AnnotationSubmitter, submitter)
			}
			if st, err := as(viewerToken).Get(ctx, "auth-1"); err != nil || st.SubmittedBy != submitter {
				t.Errorf("GET by the viewer = %+v %v, want 200 with submittedBy %s", st, err, submitter)
			}
			if _, err := as(viewerToken).List(ctx, gmini.ListOptions{}); err != nil {
				t.Errorf("list by the viewer: %v, want 200", err)
			}
			_, err = as(strangerToken).Get(ctx, "auth-1")
			checkRefused(t, "GET by the stranger", err, 403, "may not get experiment \"auth-1\"")
			// The 403 names the role that grants what was refused.
			_, err = as(submitterToken).Cancel(ctx, "auth-1")
			checkRefused(t, "DELETE by the submitter", err, 403, "may not delete")
			_, err = as(viewerToken).Cancel(ctx, "auth-1")
			checkRefused(t, "DELETE by the viewer", err, 403, "bind the ClusterRole gmini-canceller")
			_, err = as(viewerToken).Submit(ctx, experiment("auth-1", ""))
			checkRefused(t, "POST by the viewer", err, 403, "bind the ClusterRole gmini-submitter")
			if _, err := as(cancellerToken).Cancel(ctx, "auth-1"); err != nil {
				t.Errorf("DELETE by the canceller: %v, want 200", err)
			}
			// Probes stay open: the kubelet sends no token.
			if a := call(ctx, t, http.MethodGet, base+"/readyz", "", ""); a.Code != http.StatusOK {
				t.Errorf("/readyz without a token = %s, want 200", a)
			}

			log, err := os.ReadFile(b.LogPath())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(log), `msg="job created" id=auth-1`) || !strings.Contains(string(log), "user="+submitter) {
				t.Errorf("the log does not name who created auth-1:\n%s", b.LogTail(20))
			}
			for _, tok := range []string{submitterToken, viewerToken, cancellerToken, strangerToken, apiToken} {
				if strings.Contains(string(log), tok) {
					t.Error("a token appears in the backend's log")
				}
			}
			return ctx
		}).
		Assess("the client roles and the backend's reviews, as the API server sees them", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			sar := func(user string, groups []string, attrs authorizationv1.ResourceAttributes) bool {
				res, err := suite.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
					Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &attrs},
				}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return res.Status.Allowed
			}
			sa := func(name string) string { return "system:serviceaccount:" + ns + ":" + name }
			saGroups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
			for _, c := range []struct {
				user, verb string
				want       bool
			}{
				{sa("frontend"), "create", true}, {sa("frontend"), "get", true}, {sa("frontend"), "list", true}, {sa("frontend"), "delete", false},
				{sa("dashboard"), "create", false}, {sa("dashboard"), "get", true}, {sa("dashboard"), "list", true}, {sa("dashboard"), "delete", false},
				{sa("operator"), "create", false}, {sa("operator"), "get", true}, {sa("operator"), "list", true}, {sa("operator"), "delete", true},
				{sa("stranger"), "get", false},
			} {
				got := sar(c.user, saGroups, authorizationv1.ResourceAttributes{Namespace: ns, Group: "gmini.dev", Resource: "experiments", Verb: c.verb})
				if got != c.want {
					t.Errorf("%s %s experiments.gmini.dev: allowed=%v, want %v", c.user, c.verb, got, c.want)
				}
			}
			// What the backend's own reviews need: system:auth-delegator.
			for _, res := range []authorizationv1.ResourceAttributes{
				{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"},
				{Group: "authorization.k8s.io", Resource: "subjectaccessreviews", Verb: "create"},
			} {
				if !sar(backendUser, saGroups, res) {
					t.Errorf("the backend may not create %s.%s", res.Resource, res.Group)
				}
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
