//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/browser"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// screenshotEnv names a file (relative to the repository root) for the
// list page's screenshot, besides the one in the suite's logs; docs/ui.png
// is made with GMINI_E2E_SCREENSHOT=docs/ui.png.
const screenshotEnv = "GMINI_E2E_SCREENSHOT"

// pageWait bounds a wait for the page to show an experiment's progress:
// a Job's pod starts within seconds on the local node, and the page must
// follow without a reload.
const pageWait = 2 * time.Minute

// uiBrowser is one headless Chromium whose tabs show the status page of
// the backend at base. Its tabs live as long as it does, across a
// feature's assessments; what they log goes to the feature's test.
type uiBrowser struct {
	ctx  context.Context
	base string
	logf func(string, ...any)
	stop func()
}

// startBrowser installs Chromium if it is missing and starts it.
func startBrowser(ctx context.Context, t *testing.T, base string) *uiBrowser {
	t.Helper()
	start := time.Now()
	execPath, err := browser.Ensure(ctx, logger)
	if err != nil {
		t.Fatalf("install the browser: %v", err)
	}
	// The browser's temporary files go with it, also when it is killed.
	tmp, removeTmp, err := browser.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), browser.Options(execPath, tmp)...)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	stop := func() { cancelBrowser(); cancelAlloc(); removeTmp() }
	if err := chromedp.Do(bctx); err != nil {
		stop()
		t.Fatalf("start %s: %v", execPath, err)
	}
	t.Logf("chromium ready in %s", time.Since(start).Round(time.Millisecond))
	return &uiBrowser{ctx: bctx, base: base, logf: t.Logf, stop: stop}
}

// uiTab is one tab of the browser.
type uiTab struct {
	ctx  context.Context
	name string
	mu   sync.Mutex
	csp  []string
}

// open opens path in a new tab. The tab accepts the page's confirm
// dialogs (the cancel button asks), logs its console, and remembers what
// the Content-Security-Policy refused: the page must work under its own.
func (b *uiBrowser) open(t *testing.T, path string) *uiTab {
	t.Helper()
	ctx, _ := chromedp.NewContext(b.ctx) // closed with the browser
	tab := &uiTab{ctx: ctx, name: path}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.logf("%s: dialog %q: OK", path, ev.Message)
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				b.logf("%s: answer the dialog: %v", path, err)
			}
		}
	}()
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			b.logf("%s: console %s", path, m)
			if strings.Contains(m.Text, "Content Security Policy") {
				tab.mu.Lock()
				tab.csp = append(tab.csp, m.Text)
				tab.mu.Unlock()
			}
		}
	}()
	tab.do(t, chromedp.Navigate(b.base+path))
	return tab
}

func (tab *uiTab) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, pageWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", tab.name, err)
	}
}

// eval evaluates a JavaScript expression in the page (through DevTools,
// which the page's CSP does not restrict).
func eval[T any](t *testing.T, tab *uiTab, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: evaluate %s: %v", tab.name, expr, err)
	}
	return v
}

// waitFor waits until the page's expr is true, and says how long it took.
// chromedp.Poll cannot serve: it builds its predicate with new Function,
// which the page's CSP refuses.
func (tab *uiTab) waitFor(t *testing.T, what, expr string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	err := wait.PollUntilContextTimeout(tab.ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			last = err.Error()
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		body, _ := chromedp.Run(tab.ctx, chromedp.Evaluate[string](`document.querySelector("main") ? document.querySelector("main").innerText : document.body.innerText`))
		t.Fatalf("%s: %s: not after %s (%v %s); the page shows:\n%s", tab.name, what, timeout, err, last, body)
	}
	took := time.Since(start)
	t.Logf("%s: %s after %s", tab.name, what, took.Round(time.Millisecond))
	return took
}

// checkCSP fails the test for anything the page's CSP refused.
func (tab *uiTab) checkCSP(t *testing.T) {
	t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	for _, m := range tab.csp {
		t.Errorf("%s: the Content-Security-Policy refused: %s", tab.name, m)
	}
}

// js quotes s as a JavaScript string.
func js(s string) string { return strconv.Quote(s) }

func rowState(id string) string {
	return `(document.querySelector('tr[data-id=` + js(id) + `]') || {dataset: {}}).dataset.state`
}

// forwardToBackend port-forwards a local port to a ready backend pod that
// pass accepts (see readyBackend), and returns the address.
func forwardToBackend(ctx context.Context, t *testing.T, cfg *envconf.Config, pass func(corev1.Pod) bool) string {
	t.Helper()
	pod := readyBackend(ctx, t, cfg, pass)
	addr, stop, err := portForward(cfg.Client().RESTConfig(), clientset(t, cfg), ns, pod, deploy.BackendPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

// readyBackend waits until a backend pod that pass accepts is ready and
// none that it refuses is left (a rollout done), and returns its name.
func readyBackend(ctx context.Context, t *testing.T, cfg *envconf.Config, pass func(corev1.Pod) bool) string {
	t.Helper()
	cs := clientset(t, cfg)
	var pod string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy.BackendName})
		if err != nil {
			return false, nil
		}
		pod = ""
		for _, p := range pods.Items {
			if !pass(p) {
				return false, nil // the rollout is not done
			}
			if p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
				return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
			}) {
				pod = p.Name
			}
		}
		return pod != "", nil
	})
	if err != nil {
		t.Fatalf("no ready backend pod of the wanted kind in %s: %v\n%s", ns, err, explain(ctx, t, cfg))
	}
	return pod
}

// authOn reports whether a backend pod runs with --auth kubernetes.
func authOn(p corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == "GMINI_AUTH" && e.Value == "kubernetes" {
				return true
			}
		}
	}
	return false
}

// useLongRunner makes the template's runner print a line a second for ten
// minutes (netprobe tick), long enough to be cancelled from the page; the
// returned func puts the template back.
func useLongRunner(ctx context.Context, t *testing.T, cfg *envconf.Config) func() {
	t.Helper()
	cs := clientset(t, cfg).BatchV1().CronJobs(ns)
	before, err := cs.Get(ctx, "gmini-runner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patch := `{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"runner","image":"gmini-netprobe:dev","command":["/netprobe","-count","600","-every","1s","tick"]}]}}}}}}`
	if _, err := cs.Patch(ctx, "gmini-runner", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("make the template's runner run long: %v", err)
	}
	// The backend's informer follows the template within moments.
	time.Sleep(2 * time.Second)
	return func() {
		cur, err := cs.Get(context.Background(), "gmini-runner", metav1.GetOptions{})
		if err != nil {
			t.Errorf("restore the template: %v", err)
			return
		}
		cur.Spec = before.Spec
		if _, err := cs.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Errorf("restore the template: %v", err)
		}
		time.Sleep(2 * time.Second)
	}
}

// screenshot saves the tab's whole page into the suite's logs and, when
// GMINI_E2E_SCREENSHOT names a file, there too.
func (tab *uiTab) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(tab.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("%s: screenshot: %v", tab.name, err)
		return
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Error(err)
		return
	}
	paths := []string{filepath.Join(l.Logs(clusterName), name)}
	if p := os.Getenv(screenshotEnv); p != "" {
		if !filepath.IsAbs(p) {
			p = filepath.Join(l.Root, p)
		}
		paths = append(paths, p)
	}
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Error(err)
			continue
		}
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Error(err)
			continue
		}
		t.Logf("%s: screenshot %s (%d bytes)", tab.name, p, len(png))
	}
}

func TestUI(t *testing.T) {
	var b *uiBrowser
	var list *uiTab
	f := features.New("the status page in a real browser: the list and an experiment's log follow the experiment live, and a cancel from the page takes").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			addr := forwardToBackend(ctx, t, cfg, func(p corev1.Pod) bool { return !authOn(p) })
			b = startBrowser(ctx, t, "http://"+addr)
			return ctx
		}).
		Assess("an experiment submitted through the API appears in the list and reaches Succeeded without a reload; its page shows its output as it is written", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "ui-quick"
			list = b.open(t, "/ui/")
			list.waitFor(t, "the list follows the status events", `!!document.querySelector("#live.on")`, 30*time.Second)
			// A reload would forget this.
			eval[float64](t, list, `window.gminiLoaded = 42`)
			if _, err := backend(t, cfg).Submit(ctx, map[string]any{"id": id}); err != nil {
				t.Fatalf("submit %s: %v", id, err)
			}
			exp := b.open(t, "/ui/experiments/"+id)
			list.waitFor(t, id+" appears in the list", rowState(id)+` !== undefined`, pageWait)
			exp.waitFor(t, "the live log shows the runner's line", `document.getElementById("log").textContent.includes(`+js("Running Experiment: "+id)+`)`, pageWait)
			list.waitFor(t, id+" is Succeeded in the list", rowState(id)+` === "Succeeded"`, pageWait)
			if got := eval[float64](t, list, `window.gminiLoaded || 0`); got != 42 {
				t.Errorf("the list was reloaded (the page's marker is %v)", got)
			}
			exp.waitFor(t, "the experiment's page shows Succeeded with its timeline", `document.getElementById("state").textContent === "Succeeded" && document.getElementById("timeline").textContent.includes("Succeeded")`, pageWait)
			exp.waitFor(t, "the log follow ended with the experiment", `document.getElementById("log-note").textContent.includes("ended: Succeeded")`, pageWait)
			list.checkCSP(t)
			exp.checkCSP(t)
			return ctx
		}).
		Assess("a set's page follows its items to the end: counts, progress and rows", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const set = "ui-sweep"
			req := wire.SetRequest{ID: set}
			for i := 1; i <= 3; i++ {
				req.Items = append(req.Items, json.RawMessage(fmt.Sprintf(`{"experiment": {"id": "%s-%d"}}`, set, i)))
			}
			res, err := backend(t, cfg).SubmitSet(ctx, req)
			if err != nil || res.Outcomes.Created != 3 {
				t.Fatalf("submit set %s: %+v %v", set, res.Outcomes, err)
			}
			page := b.open(t, "/ui/sets/"+set)
			page.waitFor(t, "every item Succeeded, counted and shown", `document.getElementById("finished").textContent === "3" && document.getElementById("total").textContent === "3" && document.getElementById("bar").value === 3 && document.querySelectorAll('#experiments tr[data-state="Succeeded"]').length === 3`, pageWait)
			list.waitFor(t, "the set's items are in the list", rowState(set+"-1")+` === "Succeeded" && `+rowState(set+"-3")+` === "Succeeded"`, pageWait)
			page.checkCSP(t)
			return ctx
		}).
		Assess("a long-running experiment cancelled from its page becomes Cancelled, there and in the list", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "ui-long"
			restore := useLongRunner(ctx, t, cfg)
			defer restore()
			if _, err := backend(t, cfg).Submit(ctx, map[string]any{"id": id}); err != nil {
				t.Fatalf("submit %s: %v", id, err)
			}
			exp := b.open(t, "/ui/experiments/"+id)
			exp.waitFor(t, "the runner prints", `document.getElementById("log").textContent.includes("tick 1 ")`, pageWait)
			list.waitFor(t, id+" is Running in the list", rowState(id)+` === "Running"`, pageWait)
			list.screenshot(t, "ui-list.png")
			exp.do(t, chromedp.Click(chromedp.CSS("#cancel button")))
			exp.waitFor(t, id+" is Cancelled on its page", `document.getElementById("state").textContent === "Cancelled" && document.getElementById("timeline").textContent.includes("Cancelled")`, pageWait)
			list.waitFor(t, id+" is Cancelled in the list", rowState(id)+` === "Cancelled"`, pageWait)
			if st := getStatus(ctx, t, cfg, id); st.State != "Cancelled" {
				t.Errorf("GET /experiments/%s says %s", id, st.State)
			}
			if n := eval[float64](t, list, `document.querySelectorAll('tr[data-id="`+id+`"] form.cancel').length`); n != 0 {
				t.Errorf("the list still offers to cancel %s", id)
			}
			list.checkCSP(t)
			exp.checkCSP(t)
			return ctx
		}).
		Assess("through the API server's service proxy, as make proxy serves it, the links and the streams work", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			viaProxy := &uiBrowser{ctx: b.ctx, base: serviceProxy(t, cfg), logf: b.logf}
			tab := viaProxy.open(t, "/")
			tab.waitFor(t, "/ redirects to the list, which follows the status events", `location.pathname === "/ui/" && !!document.querySelector("#live.on")`, 30*time.Second)
			tab.do(t, chromedp.Click(chromedp.CSS(`tr[data-id="ui-quick"] td.id a`)))
			tab.waitFor(t, "the link leads to the experiment, whose log and timeline follow", `location.pathname === "/ui/experiments/ui-quick" && document.getElementById("log").textContent.includes("Running Experiment: ui-quick") && document.getElementById("timeline-note").textContent.includes("Final: Succeeded")`, pageWait)
			tab.checkCSP(t)
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if b != nil {
				b.stop()
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// serviceProxy serves the backend on a local port through the API
// server's service proxy, as make proxy (gmini-dev proxy) does, and
// returns its address. The API server rewrites the absolute links of the
// HTML it relays, which is why the page has none.
func serviceProxy(t *testing.T, cfg *envconf.Config) string {
	t.Helper()
	be := deploy.Backend{Config: cfg.Client().RESTConfig(), Namespace: ns}
	u, err := be.URL()
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := be.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Transport: hc.Transport,
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(func() {
		// The page's streams never end by themselves; Close would wait
		// for them.
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}

// The names of what TestUIAuth makes.
const (
	uiAuthSA       = "gmini-ui-e2e"
	uiAuthDelegate = "gmini-ui-e2e-auth-delegator"
)

// enableAuth gives the dev backend --auth kubernetes (the prod overlay's
// setting, and its right to review tokens), and an account allowed
// everything on experiments; it returns a token of that account.
func enableAuth(ctx context.Context, t *testing.T, cfg *envconf.Config) string {
	t.Helper()
	cs := clientset(t, cfg)
	objects := []func() error{
		func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: uiAuthDelegate},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: deploy.BackendName, Namespace: ns}},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: uiAuthSA}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
				ObjectMeta: metav1.ObjectMeta{Name: uiAuthSA},
				Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"gmini.dev"}, Resources: []string{"experiments"}, Verbs: []string{"create", "get", "list", "delete"}}},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: uiAuthSA},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: uiAuthSA},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: uiAuthSA, Namespace: ns}},
			}, metav1.CreateOptions{})
			return err
		},
	}
	for _, create := range objects {
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	patch := `{"spec":{"template":{"spec":{"containers":[{"name":"backend","env":[{"name":"GMINI_AUTH","value":"kubernetes"}]}]}}}}`
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, deploy.BackendName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("turn authentication on: %v", err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, uiAuthSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"gmini"}, ExpirationSeconds: ptr.To[int64](900)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// disableAuth undoes enableAuth and waits for the backend without it.
func disableAuth(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	t.Helper()
	cs := clientset(t, cfg)
	err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, deploy.BackendName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for i := range d.Spec.Template.Spec.Containers {
			c := &d.Spec.Template.Spec.Containers[i]
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GMINI_AUTH" })
		}
		_, err = cs.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
		return err == nil, nil // a conflict: read it again
	})
	if err != nil {
		t.Errorf("turn authentication off again: %v", err)
	}
	bg := metav1.DeletePropagationBackground
	del := metav1.DeleteOptions{PropagationPolicy: &bg}
	for _, err := range []error{
		cs.RbacV1().RoleBindings(ns).Delete(ctx, uiAuthSA, del),
		cs.RbacV1().Roles(ns).Delete(ctx, uiAuthSA, del),
		cs.CoreV1().ServiceAccounts(ns).Delete(ctx, uiAuthSA, del),
		cs.RbacV1().ClusterRoleBindings().Delete(ctx, uiAuthDelegate, del),
	} {
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("clean up: %v", err)
		}
	}
	// The next tests find the backend as the overlay made it.
	readyBackend(ctx, t, cfg, func(p corev1.Pod) bool { return !authOn(p) })
}

// plainRequest sends one request to base with only the given headers.
func plainRequest(ctx context.Context, t *testing.T, method, url string, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestUIAuth(t *testing.T) {
	var (
		b     *uiBrowser
		base  string
		token string
	)
	f := features.New("with --auth kubernetes the status page signs in with a Kubernetes token kept in a cookie, which the API takes for reads only").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			start := time.Now()
			token = enableAuth(ctx, t, cfg)
			base = "http://" + forwardToBackend(ctx, t, cfg, authOn)
			t.Logf("the backend runs with --auth kubernetes after %s", time.Since(start).Round(time.Second))
			b = startBrowser(ctx, t, base)
			return ctx
		}).
		Assess("without a token the page is the sign-in form, and the API refuses requests without a token or with the cookie where it changes something", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			tab := b.open(t, "/ui/")
			tab.waitFor(t, "the sign-in form", `!!document.querySelector("form#login input[name=token]")`, 30*time.Second)
			cookie := map[string]string{"Cookie": "gmini_token=" + token}
			for _, c := range []struct {
				method, path string
				header       map[string]string
				want         int
			}{
				{http.MethodGet, "/experiments", nil, http.StatusUnauthorized},
				{http.MethodGet, "/ui/", nil, http.StatusUnauthorized},
				{http.MethodGet, "/experiments", cookie, http.StatusOK},
				{http.MethodGet, "/experiments", map[string]string{"Authorization": "Bearer " + token}, http.StatusOK},
				{http.MethodDelete, "/experiments/ui-nothing", cookie, http.StatusUnauthorized},
				{http.MethodPost, "/ui/experiments/ui-nothing/cancel", cookie, http.StatusForbidden}, // no CSRF token
			} {
				if got := plainRequest(ctx, t, c.method, base+c.path, c.header); got != c.want {
					t.Errorf("%s %s with %d headers = %d, want %d", c.method, c.path, len(c.header), got, c.want)
				}
			}
			tab.checkCSP(t)
			return ctx
		}).
		Assess("signed in, the list follows an experiment to Succeeded through the cookie; signing out brings the form back", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "ui-auth"
			tab := b.open(t, "/ui/")
			tab.do(t,
				chromedp.SendKeys(chromedp.CSS(`form#login input[name="token"]`), token),
				chromedp.Submit(chromedp.CSS("form#login")),
			)
			tab.waitFor(t, "signed in, the list follows the status events", `!!document.querySelector("#live.on") && document.querySelector(".user").textContent === `+js("system:serviceaccount:"+ns+":"+uiAuthSA), 30*time.Second)
			if cookies := eval[string](t, tab, `document.cookie`); strings.Contains(cookies, "gmini_token") {
				t.Errorf("a script can read the token cookie: %q", cookies)
			}
			c, err := gmini.New(base, gmini.WithToken(token))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Submit(ctx, map[string]any{"id": id}); err != nil {
				t.Fatalf("submit %s with the token: %v", id, err)
			}
			tab.waitFor(t, id+" is Succeeded in the list", rowState(id)+` === "Succeeded"`, pageWait)
			tab.do(t, chromedp.Click(chromedp.CSS("#logout button")))
			tab.waitFor(t, "signed out, the sign-in form", `!!document.querySelector("form#login input[name=token]")`, 30*time.Second)
			tab.checkCSP(t)
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if b != nil {
				b.stop()
			}
			disableAuth(ctx, t, cfg)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
