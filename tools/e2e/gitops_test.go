//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/utils/ptr"
	e2ewait "sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/kustomize/kyaml/kio"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/gitops"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
	"github.com/gmini-dev/gmini/tools/postgres"
	"github.com/gmini-dev/gmini/tools/promote"
)

// The GitOps loop on the suite's cluster, as a team runs it: the commit's
// images pushed by digest to the cluster's registry, overlays/prod
// promoted to those digests, the repository published as the OCI artifact
// Flux reads, and Flux's own controllers (built from their module sources,
// pulled from the same registry) syncing it, exactly as
// examples/gitops/flux says except for the registry's address and CA.
// Then a new revision that changes the runner's digest, and one that
// removes an object.

const (
	prodNS        = "gmini"
	fluxKS        = "gmini-prod" // the example's Kustomization
	fluxSource    = "gmini"      // the example's OCIRepository
	clientNS      = "gitops-frontend"
	clientSA      = "frontend"
	reconcileWait = 4 * time.Minute
)

var (
	ociRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "ocirepositories"}
	kustomizations  = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
)

// gitopsRun is what the steps of TestGitOps share.
type gitopsRun struct {
	l        layout.Layout
	reg      images.Registry
	opts     []remote.Option
	meta     images.Meta
	site     databaseSite
	db       *postgres.Server
	stage    string // the published tree: the checkout's manifests, promoted
	tag      string // the tag the example's OCIRepository follows
	runner   name.Digest
	timings  []string
	forwards []func()
	token    string // the frontend's, for the audience gmini
	backend  string // a port-forward to a backend pod, host:port
}

func (g *gitopsRun) timing(t *testing.T, what string, d time.Duration) {
	line := fmt.Sprintf("%s: %s", what, d.Round(10*time.Millisecond))
	g.timings = append(g.timings, line)
	t.Log(line)
	logger.Info("gitops timing", "step", what, "elapsed", d.Round(10*time.Millisecond))
}

// networked is what the test needs of the local node beyond a registry:
// its addresses, to run the prod overlay's PostgreSQL where pods reach it.
type networked interface {
	Network() (local.Network, error)
}

// kindNetworked is the same of kind: its Docker network, whose gateway is
// this machine.
type kindNetworked interface {
	HostNetwork(context.Context) (netip.Addr, netip.Prefix, error)
}

// databaseSite is where the suite runs overlays/prod's PostgreSQL, so that
// the cluster's pods reach it, and where the backend's egress goes.
type databaseSite struct {
	netns string // a network namespace to run it in; "" for this machine's
	addr  netip.Addr
	// clients may connect without a password: the pods, as the server
	// sees them.
	clients []netip.Prefix
	// apiServer is where the backend's egress to the API server goes,
	// after its Service's address is translated.
	apiServer netip.Addr
}

// siteOf places the database: on the local node, in the node's network
// namespace on its address (also the API server's); on kind, on this
// machine at kind's network gateway, which pods reach through their node
// (from their own address, or the node's once it masquerades them).
func siteOf(ctx context.Context, p cluster.Provider, cs kubernetes.Interface) (databaseSite, bool, error) {
	switch c := p.(type) {
	case networked:
		nw, err := c.Network()
		return databaseSite{netns: nw.Namespace, addr: nw.NodeIP, clients: []netip.Prefix{nw.PodCIDR}, apiServer: nw.NodeIP}, true, err
	case kindNetworked:
		gw, subnet, err := c.HostNetwork(ctx)
		if err != nil {
			return databaseSite{}, true, err
		}
		api, err := apiServerAddr(ctx, cs)
		return databaseSite{addr: gw, clients: []netip.Prefix{subnet, netip.MustParsePrefix(kind.PodSubnet)}, apiServer: api}, true, err
	}
	return databaseSite{}, false, nil
}

// apiServerAddr is the address behind the Service kubernetes: what a
// NetworkPolicy sees as the destination of a pod's API requests.
func apiServerAddr(ctx context.Context, cs kubernetes.Interface) (netip.Addr, error) {
	list, err := cs.DiscoveryV1().EndpointSlices(corev1.NamespaceDefault).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find the API server's address: %w", err)
	}
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			for _, a := range ep.Addresses {
				if addr, err := netip.ParseAddr(a); err == nil && addr.Is4() {
					return addr, nil
				}
			}
		}
	}
	return netip.Addr{}, errors.New("the Service kubernetes has no IPv4 endpoint")
}

func TestGitOps(t *testing.T) {
	g := &gitopsRun{}
	f := features.New("GitOps: images by digest, promotion, Flux syncing overlays/prod from an OCI artifact").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			g.setup(ctx, t, cfg)
			return ctx
		}).
		Assess("Flux reconciles the promoted overlays/prod to Ready", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			g.firstRevision(ctx, t, cfg)
			return ctx
		}).
		Assess("the tutorial's request runs on the pushed runner image", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			job, _ := g.experiment(ctx, t, cfg, experimentID, g.runner)
			t.Logf("job %s ran %s", job, g.runner)
			return ctx
		}).
		Assess("a revision with a new runner digest reaches the next Job", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			g.newRunnerRevision(ctx, t, cfg)
			return ctx
		}).
		Assess("an object removed from the overlay is pruned", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			g.pruneRevision(ctx, t, cfg)
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			g.teardown(ctx, t, cfg)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func (g *gitopsRun) setup(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	var err error
	if g.l, err = layout.FromWorkingDir(); err != nil {
		t.Fatal(err)
	}
	site, ok, err := siteOf(ctx, provider, clientset(t, cfg))
	if !ok {
		requireOrSkip(t, "gitops", "overlays/prod keeps its history in PostgreSQL, which this test runs where the cluster's pods reach it: in the local node's network namespace, or at kind's network gateway; this cluster has neither")
	}
	if err != nil {
		t.Fatal(err)
	}
	g.site = site
	if g.reg, err = provider.Registry(); err != nil {
		t.Fatalf("the suite's cluster has no registry: %v", err)
	}
	if g.opts, err = g.reg.RemoteOptions(); err != nil {
		t.Fatal(err)
	}
	if g.meta, err = images.MetaFromGit(ctx, g.l.Root); err != nil {
		t.Fatal(err)
	}

	// The commit's images as `make push` pushes them: the runner for both
	// platforms, so the node pulls its own from an index; the backend for
	// this machine's only, since cross-compiling its SQLite driver for
	// arm64 costs minutes of a cold build (TestBuildIndexReproducible and
	// the release workflow build both).
	start := time.Now()
	specs := images.Project(g.l.Root, "unused")
	g.push(ctx, t, specs[0], g.meta, g.meta.Revision, []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}})
	g.runner = g.push(ctx, t, specs[1], g.meta, g.meta.Revision, images.Platforms)
	g.timing(t, "build and push gmini-backend (linux/"+runtime.GOARCH+") and gmini-runner (linux/amd64+arm64)", time.Since(start))

	// Flux, from its module sources, through the same registry.
	start = time.Now()
	prog := modbuild.Flux(g.l.FluxModule())
	if err := modbuild.Build(ctx, logger, prog, g.l.Output("bin")); err != nil {
		t.Fatal(err)
	}
	refs, err := gitops.PushFlux(ctx, logger, prog, g.l.Output("bin"), g.reg)
	if err != nil {
		t.Fatal(err)
	}
	g.timing(t, "build (cached) and push the Flux controllers' images", time.Since(start))
	start = time.Now()
	cs := clientset(t, cfg)
	api, err := cs.CoreV1().Services(corev1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sourceIP, err := gitops.SourceControllerIP(netip.MustParseAddr(api.Spec.ClusterIP))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := gitops.RenderFlux(ctx, g.l, prog, refs, sourceIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := gitops.InstallFlux(ctx, logger, cfg.Client().RESTConfig(), objs, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	g.timing(t, "install Flux (CRDs established, both controllers available)", time.Since(start))

	// overlays/prod puts its experiments under Kueue: the cluster's owner
	// installs Kueue and k8s/queue before the overlay arrives.
	start = time.Now()
	ensureKueue(ctx, t, cfg)
	g.timing(t, "install Kueue and the ClusterQueue gmini (once per suite)", time.Since(start))
	// The Flux example that installs Kueue the same way fetches from
	// GitHub, which this machine cannot reach: its objects are checked
	// against Flux's CRDs (strict server-side dry run), not synced.
	if err := dryRunFlux(ctx, cfg, g.l.Path("examples", "gitops", "kueue", "flux")); err != nil {
		t.Fatal(err)
	}

	// The history's PostgreSQL, where pods reach it, trusting them.
	dir := filepath.Join(os.TempDir(), "gmini-"+clusterName+"-postgres")
	g.db, err = postgres.Start(ctx, dir, postgres.WithNetNS(g.site.netns),
		postgres.WithTCP(netip.AddrPortFrom(g.site.addr, 5432)), postgres.WithTrustedClients(g.site.clients...),
		postgres.WithSetting("fsync", "off"), postgres.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}

	example, err := gitops.ReadObjects(g.l.Path("examples", "gitops", "flux"))
	if err != nil {
		t.Fatal(err)
	}
	if g.tag, err = gitops.SourceTag(example); err != nil {
		t.Fatal(err)
	}
	g.stage = t.TempDir()
	if err := gitops.Stage(g.l.Root, g.stage); err != nil {
		t.Fatal(err)
	}
	// What a team sets for its cluster, as network-policy.yaml asks: where
	// its API server and its database are.
	if err := setEgressTo(filepath.Join(g.stage, "overlays", "prod", "network-policy.yaml"), map[string]netip.Addr{
		"gmini-backend-apiserver": g.site.apiServer, "gmini-backend-database": g.site.addr}); err != nil {
		t.Fatal(err)
	}
}

// push builds spec's image index for platforms and pushes it, tagged tag, as `make push`
// does; it returns the digest reference.
func (g *gitopsRun) push(ctx context.Context, t *testing.T, spec images.Spec, meta images.Meta, tag string, platforms []v1.Platform) name.Digest {
	t.Helper()
	idx, err := images.BuildIndex(ctx, logger, spec, meta, platforms)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := g.reg.Repository("gmini-" + spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pub, err := images.Push(ctx, repo, idx, []string{tag}, g.opts...)
	if err != nil {
		t.Fatal(err)
	}
	g.timing(t, "push "+pub.Digest.String(), time.Since(start))
	return pub.Digest
}

// promote pins the staged overlays/prod to the digests tag names in the
// registry, as `make promote ENV=prod` does in a checkout.
func (g *gitopsRun) promote(ctx context.Context, t *testing.T, tags map[string]string) {
	t.Helper()
	var imgs []promote.Image
	for _, short := range []string{"backend", "runner"} {
		tag, ok := tags[short]
		if !ok {
			continue
		}
		repo, err := g.reg.Repository("gmini-" + short)
		if err != nil {
			t.Fatal(err)
		}
		d, err := promote.Resolve(ctx, repo.Tag(tag), g.opts...)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, promote.Image{Name: "gmini-" + short, NewName: repo.Name(), Digest: d})
	}
	if _, err := promote.File(filepath.Join(g.stage, "overlays", "prod", "kustomization.yaml"), imgs); err != nil {
		t.Fatal(err)
	}
}

// publish pushes the staged tree as the artifact and moves the tag Flux
// follows; it returns the revision Flux reports for it.
func (g *gitopsRun) publish(ctx context.Context, t *testing.T) string {
	t.Helper()
	repo, err := g.reg.Repository(gitops.ManifestsImage)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pub, err := gitops.Publish(ctx, g.stage, gitops.ArtifactMeta{
		Source: g.meta.Source, Revision: "main@sha1:" + g.meta.Revision, Created: g.meta.Created,
	}, repo, g.tag, g.opts...)
	if err != nil {
		t.Fatal(err)
	}
	g.timing(t, "publish the manifests artifact "+pub.Digest.DigestStr(), time.Since(start))
	return g.tag + "@" + pub.Digest.DigestStr()
}

func (g *gitopsRun) firstRevision(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	g.promote(ctx, t, map[string]string{"backend": g.meta.Revision, "runner": g.meta.Revision})
	revision := g.publish(ctx, t)

	example, err := gitops.ReadObjects(g.l.Path("examples", "gitops", "flux"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := gitops.FluxSync(example, g.reg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := deploy.ApplyObjects(ctx, logger, cfg.Client().RESTConfig(), objs); err != nil {
		t.Fatalf("apply the Flux example: %v", err)
	}
	// The Secret the overlay's history patch names, which no repository
	// holds: created once Flux has made the namespace.
	cs := clientset(t, cfg)
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, reconcileWait, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, prodNS, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s not created by Flux: %v\n%s", prodNS, err, g.fluxState(ctx, t, cfg))
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gmini-history", Namespace: prodNS},
		StringData: map[string]string{"dsn": g.db.TCPDSN()}}
	if _, err := cs.CoreV1().Secrets(prodNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	g.waitApplied(ctx, t, cfg, revision)
	g.timing(t, "reconcile: Flux objects applied -> Kustomization Ready (backend Available)", time.Since(start))
	if _, err := deploy.WaitBackend(logger, prodNS, time.Minute)(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.deployedImages(ctx, t, cfg) {
		if !strings.HasPrefix(d, g.reg.Host+"/") || !strings.Contains(d, "@sha256:") {
			t.Errorf("image %s is not the registry's, by digest", d)
		}
	}
}

// waitApplied waits until the Kustomization is Ready at revision.
func (g *gitopsRun) waitApplied(ctx context.Context, t *testing.T, cfg *envconf.Config, revision string) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(cfg.Client().RESTConfig())
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, reconcileWait, true, func(ctx context.Context) (bool, error) {
		ks, err := dyn.Resource(kustomizations).Namespace(gitops.FluxNamespace).Get(ctx, fluxKS, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		applied, _, _ := unstructured.NestedString(ks.Object, "status", "lastAppliedRevision")
		ready, msg := condition(ks, "Ready")
		last = fmt.Sprintf("applied %q, Ready %s: %s", applied, ready, msg)
		return applied == revision && ready == "True", nil
	})
	if err != nil {
		t.Fatalf("Kustomization %s not Ready at %s within %s (%s)\n%s", fluxKS, revision, reconcileWait, last, g.fluxState(ctx, t, cfg))
	}
}

func condition(u *unstructured.Unstructured, typ string) (status, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"], ": ", m["message"])
		}
	}
	return "Unknown", "no " + typ + " condition"
}

// fluxState explains a failed wait: the Flux objects' conditions, the
// controllers' pods, the prod namespace.
func (g *gitopsRun) fluxState(ctx context.Context, t *testing.T, cfg *envconf.Config) string {
	ctx = context.WithoutCancel(ctx)
	dyn := dynamic.NewForConfigOrDie(cfg.Client().RESTConfig())
	var b strings.Builder
	for _, r := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{ociRepositories, fluxSource}, {kustomizations, fluxKS}} {
		u, err := dyn.Resource(r.gvr).Namespace(gitops.FluxNamespace).Get(ctx, r.name, metav1.GetOptions{})
		if err != nil {
			fmt.Fprintf(&b, "%s %s: %v\n", r.gvr.Resource, r.name, err)
			continue
		}
		st, _ := json.Marshal(u.Object["status"])
		fmt.Fprintf(&b, "%s %s status: %s\n", r.gvr.Resource, r.name, st)
	}
	cs := clientset(t, cfg)
	b.WriteString(deploy.Diagnose(ctx, cs, gitops.FluxNamespace, nil))
	b.WriteString(deploy.Diagnose(ctx, cs, prodNS, nil))
	return b.String()
}

// requestReconcile asks Flux to look at the source now, as `flux reconcile
// source oci` or a notification-controller webhook Receiver does, instead
// of at the next interval.
func (g *gitopsRun) requestReconcile(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(cfg.Client().RESTConfig())
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := dyn.Resource(ociRepositories).Namespace(gitops.FluxNamespace).Patch(ctx, fluxSource, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// deployedImages are the images of the prod overlay's workloads.
func (g *gitopsRun) deployedImages(ctx context.Context, t *testing.T, cfg *envconf.Config) []string {
	cs := clientset(t, cfg)
	dep, err := cs.AppsV1().Deployments(prodNS).Get(ctx, deploy.BackendName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cj, err := cs.BatchV1().CronJobs(prodNS).Get(ctx, "gmini-runner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return []string{dep.Spec.Template.Spec.Containers[0].Image, cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image}
}

// experiment sends the tutorial frontend's request for id, as a client
// the prod overlay admits: a Kubernetes token for the audience gmini, of
// a ServiceAccount bound to gmini-submitter. It goes to a backend pod
// through a port-forward: the API server's service proxy does not pass
// the token on, and the overlay's NetworkPolicy admits only labelled
// client pods. It waits for the Job, checks that its pod ran want and
// that its log reads `Running Experiment: <id>`, and returns the Job's
// name and when it was created.
func (g *gitopsRun) experiment(ctx context.Context, t *testing.T, cfg *envconf.Config, id string, want name.Digest) (string, time.Time) {
	t.Helper()
	c := g.post(ctx, t, cfg, id)
	created := time.Now()
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: c.Job, Namespace: prodNS}}
	if err := e2ewait.For(jobFinished(cfg, job), e2ewait.WithTimeout(jobWaitTimeout), e2ewait.WithInterval(500*time.Millisecond)); err != nil {
		t.Fatalf("job %s: %v\n%s", c.Job, err, g.fluxState(ctx, t, cfg))
	}
	cs := clientset(t, cfg)
	pods, err := cs.CoreV1().Pods(prodNS).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + c.Job})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods of job %s: %d, %v", c.Job, len(pods.Items), err)
	}
	pod := pods.Items[0]
	if got := pod.Spec.Containers[0].Image; got != want.String() {
		t.Errorf("job %s ran image %s, want %s", c.Job, got, want)
	}
	if len(pod.Status.ContainerStatuses) == 1 {
		if id := pod.Status.ContainerStatuses[0].ImageID; !g.pulledFrom(t, id, want) {
			t.Errorf("job %s: the kubelet reports image %s, not one of %s", c.Job, id, want)
		}
	}
	logs, err := cs.CoreV1().Pods(prodNS).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "runner"}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := "Running Experiment: " + id; !strings.Contains(string(logs), w) {
		t.Errorf("runner log %q lacks %q", logs, w)
	}
	return c.Job, created
}

// pulledFrom says whether the kubelet's imageID names ref's index, or one
// of the images it lists, in the registry.
func (g *gitopsRun) pulledFrom(t *testing.T, imageID string, ref name.Digest) bool {
	digests := []string{ref.DigestStr()}
	if idx, err := remote.Index(ref, g.opts...); err == nil {
		if im, err := idx.IndexManifest(); err == nil {
			for _, m := range im.Manifests {
				digests = append(digests, m.Digest.String())
				if img, err := idx.Image(m.Digest); err == nil {
					if cn, err := img.ConfigName(); err == nil {
						digests = append(digests, cn.String())
					}
				}
			}
		}
	}
	return slices.ContainsFunc(digests, func(d string) bool { return strings.HasSuffix(imageID, d) })
}

// post submits the tutorial's experiment for id with a client token,
// through a port-forward to a ready backend pod, and wants it created
// (201).
func (g *gitopsRun) post(ctx context.Context, t *testing.T, cfg *envconf.Config, id string) wire.Submission {
	t.Helper()
	cs := clientset(t, cfg)
	if g.token == "" {
		g.token = g.clientToken(ctx, t, cs)
	}
	for attempt := 0; ; attempt++ {
		if g.backend == "" {
			g.backend = g.forward(ctx, t, cfg, cs)
		}
		c, err := gmini.New("http://"+g.backend, gmini.WithToken(g.token))
		if err != nil {
			t.Fatal(err)
		}
		sub, err := c.Submit(ctx, map[string]any{"id": id, "key": "k-123"})
		switch {
		case err == nil && sub.Created:
			return sub
		case err == nil:
			t.Fatalf("POST /experiment %s = %+v, want 201", id, sub)
		case gmini.StatusCode(err) != 0:
			t.Fatalf("POST /experiment %s: %v", id, err)
		}
		// No answer: the pod behind the forward may have gone, forward
		// to another.
		g.backend = ""
		if attempt == 2 {
			t.Fatalf("POST /experiment through a port-forward: %v", err)
		}
	}
}

// clientToken is a token of the frontend's ServiceAccount for the audience
// gmini, the account bound to gmini-submitter and gmini-queue-user in the
// prod namespace.
func (g *gitopsRun) clientToken(ctx context.Context, t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	for _, obj := range []func() error{
		func() error {
			_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clientNS}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().ServiceAccounts(clientNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: clientSA}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().RoleBindings(prodNS).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "gitops-frontend-submits"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "gmini-submitter"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: clientSA, Namespace: clientNS}},
			}, metav1.CreateOptions{})
			return err
		},
		// prod's experiments wait in its LocalQueue default (k8s/components/queue).
		func() error {
			_, err := cs.RbacV1().RoleBindings(prodNS).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "gitops-frontend-queues"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "gmini-queue-user"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: clientSA, Namespace: clientNS}},
			}, metav1.CreateOptions{})
			return err
		},
	} {
		if err := obj(); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	tr, err := cs.CoreV1().ServiceAccounts(clientNS).CreateToken(ctx, clientSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"gmini"}, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// forward opens a port-forward to a ready backend pod and returns its
// local address; teardown closes it.
func (g *gitopsRun) forward(ctx context.Context, t *testing.T, cfg *envconf.Config, cs kubernetes.Interface) string {
	t.Helper()
	pods, err := cs.CoreV1().Pods(prodNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy.BackendName})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(pods.Items, func(p corev1.Pod) bool {
		return p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		})
	})
	if i < 0 {
		t.Fatalf("no ready backend pod in %s\n%s", prodNS, g.fluxState(ctx, t, cfg))
	}
	addr, stop, err := portForward(cfg.Client().RESTConfig(), cs, prodNS, pods.Items[i].Name, deploy.BackendPort)
	if err != nil {
		t.Fatal(err)
	}
	g.forwards = append(g.forwards, stop)
	return addr
}

func portForward(rc *rest.Config, cs kubernetes.Interface, ns, pod string, port int) (string, func(), error) {
	rt, upgrader, err := spdy.RoundTripperFor(rc)
	if err != nil {
		return "", nil, err
	}
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return "", nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		return "", nil, fmt.Errorf("port-forward to %s/%s: %v %s", ns, pod, err, errOut.String())
	case <-time.After(30 * time.Second):
		close(stop)
		return "", nil, fmt.Errorf("port-forward to %s/%s: not ready after 30s %s", ns, pod, errOut.String())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		close(stop)
		return "", nil, fmt.Errorf("port-forward to %s/%s: ports %v, %v", ns, pod, ports, err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local), func() { close(stop) }, nil
}

func (g *gitopsRun) newRunnerRevision(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	// Another build of the runner: same binary, another version label, so
	// another digest (the commit stays the commit).
	meta := g.meta
	meta.Version = "e2e-revision-2"
	next := g.push(ctx, t, images.Project(g.l.Root, "unused")[1], meta, meta.Version, images.Platforms)
	if next.DigestStr() == g.runner.DigestStr() {
		t.Fatalf("the second runner build has the first one's digest %s", next.DigestStr())
	}
	g.promote(ctx, t, map[string]string{"runner": meta.Version})
	revision := g.publish(ctx, t)
	published := time.Now()
	g.requestReconcile(ctx, t, cfg)

	// Flux applies the revision: the template the backend copies changes.
	cs := clientset(t, cfg)
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, reconcileWait, true, func(ctx context.Context) (bool, error) {
		cj, err := cs.BatchV1().CronJobs(prodNS).Get(ctx, "gmini-runner", metav1.GetOptions{})
		return err == nil && cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image == next.String(), nil
	})
	if err != nil {
		t.Fatalf("the runner template does not name %s within %s\n%s", next, reconcileWait, g.fluxState(ctx, t, cfg))
	}
	g.timing(t, "publish -> Flux applied the new runner digest", time.Since(published))
	// The backend's informer follows the template; the first Job that
	// copies the new image is what counts.
	for i := 0; ; i++ {
		id := fmt.Sprintf("gitopsRevision2-%d", i)
		g.post(ctx, t, cfg, id)
		j, err := cs.BatchV1().Jobs(prodNS).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if j.Spec.Template.Spec.Containers[0].Image == next.String() {
			g.timing(t, "publish -> first Job on the new runner image", time.Since(published))
			break
		}
		if i == 60 {
			t.Fatalf("60 Jobs after the template changed, none runs %s", next)
		}
		time.Sleep(500 * time.Millisecond)
	}
	g.waitApplied(ctx, t, cfg, revision)
	// The next experiment runs to completion on the new image.
	job, _ := g.experiment(ctx, t, cfg, "gitopsRevision2", next)
	t.Logf("job %s ran %s", job, next)
	g.runner = next
}

func (g *gitopsRun) pruneRevision(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	cs := clientset(t, cfg)
	if _, err := cs.PolicyV1().PodDisruptionBudgets(prodNS).Get(ctx, deploy.BackendName, metav1.GetOptions{}); err != nil {
		t.Fatalf("PodDisruptionBudget %s before the revision that removes it: %v", deploy.BackendName, err)
	}
	if err := removeResource(filepath.Join(g.stage, "overlays", "prod", "kustomization.yaml"), "pdb.yaml"); err != nil {
		t.Fatal(err)
	}
	revision := g.publish(ctx, t)
	published := time.Now()
	g.requestReconcile(ctx, t, cfg)
	g.waitApplied(ctx, t, cfg, revision)
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.PolicyV1().PodDisruptionBudgets(prodNS).Get(ctx, deploy.BackendName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("PodDisruptionBudget %s still exists after revision %s: %v", deploy.BackendName, revision, err)
	}
	g.timing(t, "publish -> removed PodDisruptionBudget pruned", time.Since(published))
	if _, err := cs.AppsV1().Deployments(prodNS).Get(ctx, deploy.BackendName, metav1.GetOptions{}); err != nil {
		t.Errorf("the backend went with the PodDisruptionBudget: %v", err)
	}
}

func (g *gitopsRun) teardown(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	for _, stop := range g.forwards {
		stop()
	}
	if g.l.Root != "" && len(g.timings) > 0 {
		fmt.Fprintf(os.Stderr, "\n==== GitOps timings ====\n%s\n", strings.Join(g.timings, "\n"))
	}
	// Deleting the Kustomization prunes what it applied: the backends stop
	// using the database before it goes, and the node is free for the
	// tests that follow.
	dyn := dynamic.NewForConfigOrDie(cfg.Client().RESTConfig())
	bg := metav1.DeletePropagationBackground
	if err := dyn.Resource(kustomizations).Namespace(gitops.FluxNamespace).Delete(ctx, fluxKS, metav1.DeleteOptions{PropagationPolicy: &bg}); err == nil {
		_ = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := clientset(t, cfg).CoreV1().Namespaces().Get(ctx, prodNS, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	}
	_ = clientset(t, cfg).CoreV1().Namespaces().Delete(ctx, clientNS, metav1.DeleteOptions{})
	if g.db != nil {
		if err := g.db.Stop(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	}
}

// setEgressTo points every egress rule of the backend's API server and
// database policies at cidr: the team's cluster addresses.
func setEgressTo(path string, to map[string]netip.Addr) error {
	return editYAML(path, func(n *kyaml.RNode) error {
		addr, ok := to[n.GetName()]
		if n.GetKind() != "NetworkPolicy" || !ok {
			return nil
		}
		cidr := netip.PrefixFrom(addr, addr.BitLen()).String()
		rules, err := n.Pipe(kyaml.Lookup("spec", "egress"))
		if err != nil || rules == nil {
			return fmt.Errorf("NetworkPolicy %s has no egress rules: %v", n.GetName(), err)
		}
		to, err := kyaml.Parse(fmt.Sprintf("- ipBlock:\n    cidr: %s\n", cidr))
		if err != nil {
			return err
		}
		return rules.VisitElements(func(rule *kyaml.RNode) error {
			return rule.PipeE(kyaml.SetField("to", to))
		})
	})
}

// setEgressObjects is setEgressTo on rendered objects.
func setEgressObjects(objs []*unstructured.Unstructured, to map[string]netip.Addr) error {
	for _, o := range objs {
		addr, ok := to[o.GetName()]
		if o.GetKind() != "NetworkPolicy" || !ok {
			continue
		}
		rules, found, err := unstructured.NestedSlice(o.Object, "spec", "egress")
		if err != nil || !found {
			return fmt.Errorf("NetworkPolicy %s has no egress rules: %v", o.GetName(), err)
		}
		for i := range rules {
			rule, ok := rules[i].(map[string]any)
			if !ok {
				return fmt.Errorf("NetworkPolicy %s: egress rule %d is not an object", o.GetName(), i)
			}
			rule["to"] = []any{map[string]any{"ipBlock": map[string]any{"cidr": netip.PrefixFrom(addr, addr.BitLen()).String()}}}
		}
		if err := unstructured.SetNestedSlice(o.Object, rules, "spec", "egress"); err != nil {
			return err
		}
	}
	return nil
}

// removeResource drops res from a kustomization's resources, as a commit
// that deletes the object would.
func removeResource(path, res string) error {
	return editYAML(path, func(n *kyaml.RNode) error {
		list, err := n.Pipe(kyaml.Lookup("resources"))
		if err != nil || list == nil {
			return fmt.Errorf("no resources in %s: %v", path, err)
		}
		y := list.YNode()
		kept := slices.DeleteFunc(slices.Clone(y.Content), func(e *kyaml.Node) bool { return e.Value == res })
		if len(kept) == len(y.Content) {
			return fmt.Errorf("%s lists no resource %s", path, res)
		}
		y.Content = kept
		return nil
	})
}

func editYAML(path string, edit func(*kyaml.RNode) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	nodes, err := (&kio.ByteReader{Reader: bytes.NewReader(data), PreserveSeqIndent: true}).Read()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, n := range nodes {
		if err := edit(n); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	var out bytes.Buffer
	if err := (kio.ByteWriter{Writer: &out}).Write(nodes); err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}

// dryRunFlux creates every object of the Flux example in dir with a strict
// server-side dry run, against the CRDs of the Flux installed here.
func dryRunFlux(ctx context.Context, cfg *envconf.Config, dir string) error {
	objs, err := gitops.ReadObjects(dir)
	if err != nil {
		return err
	}
	d, err := dynamic.NewForConfig(cfg.Client().RESTConfig())
	if err != nil {
		return err
	}
	resources := map[string]string{"GitRepository": "gitrepositories", "OCIRepository": "ocirepositories", "Kustomization": "kustomizations"}
	for _, o := range objs {
		gv, err := schema.ParseGroupVersion(o.GetAPIVersion())
		if err != nil {
			return err
		}
		res, ok := resources[o.GetKind()]
		if !ok {
			return fmt.Errorf("%s: unexpected kind %s %s", dir, o.GetKind(), o.GetName())
		}
		_, err = d.Resource(gv.WithResource(res)).Namespace(o.GetNamespace()).Create(ctx, o, metav1.CreateOptions{
			DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict,
		})
		if err != nil {
			return fmt.Errorf("the API server refuses %s %s of %s: %w", o.GetKind(), o.GetName(), dir, err)
		}
	}
	return nil
}
