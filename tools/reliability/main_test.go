//go:build e2e

// Package reliability proves, against a real kube-apiserver, that gmini
// loses nothing under bad input, load, an API server outage and shutdown,
// and that its permissions and pods are as small as they should be.
//
// The cluster is the local provider without a node (etcd, kube-apiserver,
// kube-controller-manager: the Job controller makes pods, nothing runs
// them). The backend is the real binary, run as a host process that
// authenticates with a token of its own ServiceAccount, so every request
// goes through exactly the RBAC it has in a cluster.
//
// Run it with `make reliability`. GMINI_REL_KEEP=1 leaves the cluster
// running; logs are in _output/logs/reliability.
package reliability

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// clusterName is the suite's cluster; GMINI_REL_CLUSTER picks another.
var clusterName = func() string {
	if v := os.Getenv("GMINI_REL_CLUSTER"); v != "" {
		return v
	}
	return "gmini-rel"
}()

const (
	ns          = deploy.Namespace
	backendSA   = deploy.BackendName
	backendUser = "system:serviceaccount:" + ns + ":" + backendSA
	annotID     = jobspec.AnnotationID
	// apiTimeout is the backend's --api-timeout: the bound on a POST's
	// API calls, hence on how long a 503 may take.
	apiTimeout = 5 * time.Second
)

var (
	testenv env.Environment
	logger  = slog.New(slog.NewTextHandler(os.Stderr, nil))
	// suite is what TestMain prepared; every test reads it.
	suite struct {
		layout   layout.Layout
		cluster  *local.Cluster
		admin    *kubernetes.Clientset
		adminCfg *rest.Config
		// sa acts as the backend's ServiceAccount, with the same token.
		sa      *kubernetes.Clientset
		backend *backendproc.Process
		// backendBin and backendKubeconfig start more backends, with
		// other flags but the same identity.
		backendBin, backendKubeconfig string
		// historyDB is the main backend's SQLite history.
		historyDB string
	}
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	start := time.Now()
	l, err := layout.FromWorkingDir()
	if err != nil {
		logger.Error("find repository root", "err", err)
		return 1
	}
	suite.layout = l
	out := l.Logs(clusterName)
	if err := os.MkdirAll(out, 0o755); err != nil {
		logger.Error("make log directory", "err", err)
		return 1
	}
	node, err := cluster.Prepare(ctx, logger, l)
	if err != nil {
		logger.Error("prepare the machine", "err", err)
		return 1
	}
	// A crash, not a polite stop: StopComponent kills the apiserver at
	// once, which is what an outage looks like to the backend.
	suite.cluster = cluster.NewLocal(l, node, clusterName, logger, local.WithoutNode(), local.WithStopGrace(0))
	bin, err := backendproc.Build(ctx, logger, l)
	if err != nil {
		logger.Error("build backend", "err", err)
		return 1
	}
	logger.Info("prepared", "elapsed", time.Since(start).Round(time.Millisecond))

	testenv = env.NewWithConfig(envconf.New())
	testenv.Setup(
		envfuncs.CreateClusterWithOpts(suite.cluster, clusterName),
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			// client-go's default of 5 requests a second would make the
			// tests' own checks the slowest part of the suite.
			suite.adminCfg = rest.CopyConfig(cfg.Client().RESTConfig())
			suite.adminCfg.QPS, suite.adminCfg.Burst = 200, 400
			suite.admin, err = kubernetes.NewForConfig(suite.adminCfg)
			return ctx, err
		},
		deploy.ApplyOverlay(logger, l.Overlay("dev")),
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			kubeconfig := filepath.Join(out, "backend.kubeconfig")
			suite.backendBin, suite.backendKubeconfig = bin, kubeconfig
			saCfg, err := serviceAccountConfig(ctx, suite.admin, suite.adminCfg, kubeconfig)
			if err != nil {
				return ctx, err
			}
			if suite.sa, err = kubernetes.NewForConfig(saCfg); err != nil {
				return ctx, err
			}
			logPath := filepath.Join(out, "backend.log")
			_ = os.Remove(logPath)
			// History on, as the dev overlay ships it: SQLite in a file.
			suite.historyDB = filepath.Join(out, "history.db")
			for _, f := range []string{suite.historyDB, suite.historyDB + "-wal", suite.historyDB + "-shm"} {
				_ = os.Remove(f)
			}
			suite.backend = backendproc.New(backendproc.Options{
				Binary:  bin,
				LogPath: logPath,
				Log:     logger,
				Args: []string{
					"--kubeconfig", kubeconfig,
					"--namespace", ns,
					"--listen", "127.0.0.1:0",
					"--log-format", "text",
					"--api-timeout", apiTimeout.String(),
					"--history-dsn", "sqlite:" + suite.historyDB,
					"--identity", "reliability-main",
				},
			})
			return ctx, suite.backend.Start(ctx)
		},
	)
	logsDir := filepath.Join(out, "cluster")
	testenv.Finish(
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			if suite.backend != nil {
				if code, err := suite.backend.Stop(ctx); err != nil || code != 0 {
					logger.Warn("backend did not stop cleanly", "exit", code, "err", err)
				}
			}
			return ctx, nil
		},
		cluster.Teardown(logger, suite.cluster, logsDir, os.Getenv("GMINI_REL_KEEP") == "1"),
	)
	code := testenv.Run(m)
	if code != 0 && suite.backend != nil {
		fmt.Fprintf(os.Stderr, "\n==== backend log tail (%s) ====\n%s\n", suite.backend.LogPath(), suite.backend.LogTail(40))
	}
	logger.Info("reliability suite finished", "exit", code, "elapsed", time.Since(start).Round(time.Second))
	return code
}

// serviceAccountConfig asks the TokenRequest API for a token of the
// backend's ServiceAccount and writes a kubeconfig that uses it, with the
// admin config's server and CA. The token is what a pod of the Deployment
// would get in its projected volume.
func serviceAccountConfig(ctx context.Context, admin kubernetes.Interface, adminCfg *rest.Config, path string) (*rest.Config, error) {
	expiry := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, backendSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for %s: %w", backendUser, err)
	}
	ca := adminCfg.TLSClientConfig.CAData
	if len(ca) == 0 && adminCfg.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(adminCfg.TLSClientConfig.CAFile); err != nil {
			return nil, fmt.Errorf("read cluster CA: %w", err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[clusterName] = &clientcmdapi.Cluster{Server: adminCfg.Host, CertificateAuthorityData: ca}
	kc.AuthInfos[backendSA] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts[backendSA] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: backendSA, Namespace: ns}
	kc.CurrentContext = backendSA
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return nil, fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// failf ends a test with the backend's last log lines, which usually say
// why an answer was wrong.
func failf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\n---- backend log tail ----\n%s", fmt.Sprintf(format, args...), suite.backend.LogTail(25))
}

// errorf is failf that lets the test go on.
func errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf("%s\n---- backend log tail ----\n%s", fmt.Sprintf(format, args...), suite.backend.LogTail(15))
}

// short cuts a body for a failure message.
func short(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return s
}
