package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/manifests"
	"github.com/gmini-dev/gmini/tools/postgres"
)

// benchEnv deploys gmini's dev overlay into namespaces of the benchmark's
// cluster and runs backend processes against them.
type benchEnv struct {
	log        *slog.Logger
	l          layout.Layout
	cfg        *rest.Config
	admin      kubernetes.Interface
	kubeconfig string
	bin        string
	refBin     string // the backend built at -compare-ref, if any
	logDir     string
	extra      []string
	deployed   map[string]bool
	pg         *postgres.Server
	started    []string // rows of the backends started, by number
}

// deploy applies the dev overlay into namespace, without its ResourceQuota:
// the benchmark makes thousands of Jobs and pods on purpose.
func (e *benchEnv) deploy(ctx context.Context, namespace string) error {
	if e.deployed[namespace] {
		return nil
	}
	objs, err := manifests.Objects(e.l.Overlay("dev"))
	if err != nil {
		return err
	}
	var keep []*unstructured.Unstructured
	for _, o := range manifests.InNamespace(objs, namespace) {
		if o.GetKind() != "ResourceQuota" {
			keep = append(keep, o)
		}
	}
	if err := deploy.ApplyObjects(ctx, e.log, e.cfg, keep); err != nil {
		return fmt.Errorf("deploy into %s: %w", namespace, err)
	}
	if e.deployed == nil {
		e.deployed = map[string]bool{}
	}
	e.deployed[namespace] = true
	return nil
}

// backend starts a backend for namespace with the admin kubeconfig, its
// defaults and extra flags; row names its spawn row. It is this checkout's
// backend, or with ref not empty the one built at that revision (refBin).
func (e *benchEnv) backend(ctx context.Context, ref, row, namespace string, args []string) (*backendRun, error) {
	if err := e.deploy(ctx, namespace); err != nil {
		return nil, err
	}
	if row == "" {
		row = rowGmini
	}
	name := fmt.Sprintf("b%d", len(e.started))
	e.started = append(e.started, row)
	all := append([]string{"--kubeconfig", e.kubeconfig, "--namespace", namespace, "--listen", "127.0.0.1:0",
		"--identity", name}, e.extra...)
	p := backendproc.New(backendproc.Options{Binary: e.binary(ref), Args: append(all, args...), LogPath: filepath.Join(e.logDir, name+".log"), Log: e.log})
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return &backendRun{row: row, id: name, namespace: namespace, proc: p}, nil
}

// binary is this checkout's backend, or with ref not empty refBin.
func (e *benchEnv) binary(ref string) string {
	if ref != "" {
		return e.refBin
	}
	return e.bin
}

// variant starts the backend of one variant in a namespace of its own;
// with ref not empty, the backend built at that revision, in a row,
// namespace and database of its own beside this checkout's.
func (e *benchEnv) variant(ctx context.Context, v, ref string) (*backendRun, error) {
	namespace, row, file := "gmini-bench-"+v, rowName(v), "history-sqlite.db"
	if ref != "" {
		namespace, row, file = namespace+"-ref", row+" at "+ref, "history-sqlite-ref.db"
	}
	switch v {
	case variantSQLite:
		db := filepath.Join(e.logDir, file)
		for _, f := range []string{db, db + "-wal", db + "-shm"} {
			_ = os.Remove(f)
		}
		return e.recording(e.backend(ctx, ref, row, namespace, []string{"--history-dsn", "sqlite:" + db}))
	case variantPostgres:
		// One server for every PostgreSQL row: each records its own
		// namespace's Jobs, with IDs no other row uses.
		if e.pg == nil {
			pg, err := postgres.Start(ctx, e.l.Output("postgres", "bench"), postgres.WithLogger(e.log))
			if err != nil {
				return nil, err
			}
			e.pg = pg
		}
		return e.recording(e.backend(ctx, ref, row, namespace, []string{"--history-dsn", e.pg.DSN()}))
	case variantAuth:
		if err := e.deploy(ctx, namespace); err != nil {
			return nil, err
		}
		token, err := e.clientToken(ctx, namespace)
		if err != nil {
			return nil, err
		}
		b, err := e.backend(ctx, ref, row, namespace, []string{"--auth", "kubernetes"})
		if err != nil {
			return nil, err
		}
		b.token = token
		return b, nil
	}
	return nil, fmt.Errorf("unknown variant %q", v)
}

// recording marks a backend started with history: it records and
// releases every Job it makes.
func (e *benchEnv) recording(b *backendRun, err error) (*backendRun, error) {
	if err != nil {
		return nil, err
	}
	b.records = true
	return b, nil
}

// clientToken is what a frontend pod would hold: a token for the audience
// gmini of a ServiceAccount bound to gmini-submitter in namespace.
func (e *benchEnv) clientToken(ctx context.Context, namespace string) (string, error) {
	objs, err := manifests.Objects(e.l.Path("k8s", "auth"))
	if err != nil {
		return "", err
	}
	var roles []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "ClusterRole" {
			roles = append(roles, o)
		}
	}
	if err := deploy.ApplyObjects(ctx, e.log, e.cfg, roles); err != nil {
		return "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bench-client", Namespace: namespace}}
	if _, err := e.admin.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-client-submits", Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "gmini-submitter"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: namespace}},
	}
	if _, err := e.admin.RbacV1().RoleBindings(namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	tr, err := e.admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"gmini"}, ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, sa.Name, err)
	}
	return tr.Status.Token, nil
}

func (e *benchEnv) close() {
	if e.pg != nil {
		if err := e.pg.Stop(context.Background()); err != nil {
			e.log.Error("stop PostgreSQL", "err", err)
		}
		e.pg = nil
	}
}

// buildAtRef builds the backend of a git revision, in a worktree that is
// removed afterwards, for a before/after row in the same run.
func buildAtRef(ctx context.Context, log *slog.Logger, l layout.Layout, ref string) (string, error) {
	t0 := time.Now()
	dir, err := os.MkdirTemp("", "gmini-bench-ref-")
	if err != nil {
		return "", err
	}
	tree := filepath.Join(dir, "tree")
	git := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", l.Root}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := git("worktree", "add", "--detach", tree, ref); err != nil {
		return "", err
	}
	defer func() { _ = git("worktree", "remove", "--force", tree) }()
	bin := filepath.Join(dir, "backend")
	if err := images.GoBuild(ctx, filepath.Join(tree, "apps", "backend"), ".", bin, runtime.GOARCH); err != nil {
		return "", fmt.Errorf("build the backend at %s: %w", ref, err)
	}
	log.Info("backend built", "ref", ref, "elapsed", time.Since(t0).Round(time.Millisecond))
	return bin, nil
}
