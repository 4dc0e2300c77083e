// Command gmini-dev runs gmini on a local cluster for a person to use.
//
//	gmini-dev up      create the cluster (kind with Docker, else a local node),
//	                  deploy overlays/dev, run one experiment, print its output
//	gmini-dev proxy   serve the backend on 127.0.0.1:8080 through the API server
//	gmini-dev down    delete the cluster and everything it left behind
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// clusterName is the cluster `make up` makes; -cluster names another, so
// a second one can run beside it.
var clusterName = "gmini"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Stdout, os.Args[1:]); err != nil {
		log.Error("gmini-dev", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("gmini-dev", flag.ContinueOnError)
	provider := fs.String("provider", cluster.Auto, "cluster provider: auto, kind or local")
	listen := fs.String("listen", "127.0.0.1:8080", "address for `proxy`")
	fs.StringVar(&clusterName, "cluster", clusterName, "the cluster's name")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: gmini-dev [-provider auto|kind|local] up|down|proxy")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want one command: up, down or proxy")
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	switch cmd := fs.Arg(0); cmd {
	case "up":
		// Chosen before anything is built: a provider that cannot run
		// here fails now, saying what to do, with nothing to clean up.
		choice, err := cluster.Choose(ctx, *provider, cluster.Machine(), cluster.DefaultNodeImages())
		if err != nil {
			return err
		}
		log.Info("cluster provider chosen", "provider", choice.Provider, "why", choice.Reason)
		p, err := cluster.New(ctx, log, l, choice.Provider, clusterName, true)
		if err != nil {
			return err
		}
		return up(ctx, log, stdout, p, l)
	case "down":
		// auto deletes whichever provider's cluster exists.
		if err := cluster.Down(ctx, log, l, *provider, clusterName); err != nil {
			return err
		}
		log.Info("cluster deleted", "name", clusterName)
		return nil
	case "proxy":
		p, err := cluster.Existing(ctx, log, l, *provider, clusterName)
		if err != nil {
			return err
		}
		return proxy(ctx, log, p, *listen)
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func up(ctx context.Context, log *slog.Logger, stdout io.Writer, p cluster.Provider, l layout.Layout) error {
	start := time.Now()
	images := deploy.Images{Layout: l, Tag: "dev"}
	cfg := envconf.New()
	if _, err := deploy.Run(ctx, cfg,
		deploy.BuildImages(log, images),
		envfuncs.CreateClusterWithOpts(p, clusterName),
		deploy.LoadImages(log, clusterName, images),
		deploy.ApplyOverlay(log, l.Overlay("dev")),
		deploy.WaitBackend(log, deploy.Namespace, 3*time.Minute),
	); err != nil {
		return err
	}
	kubeconfig := p.GetKubeconfig()
	client, err := kubernetes.NewForConfig(cfg.Client().RESTConfig())
	if err != nil {
		return err
	}
	b, err := deploy.Backend{Config: cfg.Client().RESTConfig(), Namespace: deploy.Namespace}.Client()
	if err != nil {
		return err
	}

	// One experiment end to end, as the tutorial's frontend sends it.
	id := "demo" + time.Now().UTC().Format("20060102T150405")
	experiment := map[string]any{"id": id, "key": "demo-key"}
	sub, err := b.Submit(ctx, experiment)
	if err != nil {
		return fmt.Errorf("the backend refused the demo experiment: %w", err)
	}
	code := http.StatusOK
	if sub.Created {
		code = http.StatusCreated
	}
	answer, _ := json.Marshal(sub)
	fmt.Fprintf(stdout, "POST /experiment {\"experiment\": {\"id\": %q, \"key\": \"demo-key\"}}\n-> %d %s\n", id, code, answer)
	if err := waitExperiment(ctx, client, b, id); err != nil {
		return err
	}
	var logs strings.Builder
	if err := b.Logs(ctx, id, &logs); err != nil {
		return err
	}
	status, err := b.Get(ctx, id)
	if err != nil {
		return err
	}
	statusJSON, _ := json.Marshal(status)
	fmt.Fprintf(stdout, "runner output: %s", logs.String())
	fmt.Fprintf(stdout, "status: %s\n", statusJSON)
	fmt.Fprintf(stdout, `
gmini is running (%s). To send more experiments:

  make proxy     # in another terminal: the backend on 127.0.0.1:8080
  curl -sS -X POST localhost:8080/experiment -H 'Content-Type: application/json' \
       -d '{"experiment": {"id": "myExp1", "key": "k"}}'
  curl -sS localhost:8080/experiments/myExp1/logs

kubeconfig: %s
Stop everything with: make down
`, time.Since(start).Round(time.Second), kubeconfig)
	return nil
}

// waitExperiment polls the backend's status endpoint until the experiment
// has finished.
func waitExperiment(ctx context.Context, client kubernetes.Interface, b *gmini.Client, id string) error {
	var state string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		st, err := b.Get(ctx, id)
		if err != nil {
			state = err.Error()
			return false, nil
		}
		state = fmt.Sprintf("%s %s %s", st.State, st.Reason, st.Message)
		switch st.State {
		case "Succeeded":
			return true, nil
		case "Failed":
			return false, fmt.Errorf("experiment %s failed: %s", id, state)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("experiment %s did not finish (last status %s): %w\n%s", id, state, err,
			deploy.Diagnose(context.WithoutCancel(ctx), client, deploy.Namespace, nil))
	}
	return nil
}

// proxy serves the backend on a local port by forwarding through the API
// server's service proxy, the way `kubectl proxy` would, so curl examples
// work unchanged.
func proxy(ctx context.Context, log *slog.Logger, p cluster.Provider, listen string) error {
	kubeconfig := p.GetKubeconfig()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %q (is the cluster up? run make up): %w", kubeconfig, err)
	}
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	proxied, err := deploy.Backend{Config: cfg, Namespace: deploy.Namespace}.URL()
	if err != nil {
		return err
	}
	target, err := url.Parse(proxied)
	if err != nil {
		return err
	}
	rp := &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	log.Info("serving the gmini backend", "url", "http://"+ln.Addr().String(), "via", target.String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
