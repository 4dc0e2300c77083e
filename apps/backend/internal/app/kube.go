package app

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeClient builds the API client: in-cluster config first (the normal
// case), else the kubeconfig a developer has, so the backend also runs on a
// laptop against any cluster.
func kubeClient(cfg *Config) (*kubernetes.Clientset, *rest.Config, error) {
	var restCfg *rest.Config
	namespace := cfg.Namespace
	if cfg.Kubeconfig == "" {
		if c, err := rest.InClusterConfig(); err == nil {
			restCfg = c
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = cfg.Kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	if restCfg == nil {
		c, err := loader.ClientConfig()
		if err != nil {
			return nil, nil, fmt.Errorf("load kubeconfig (not running in a cluster): %w", err)
		}
		restCfg = c
	}
	if namespace == "" {
		// In a pod this reads the ServiceAccount's namespace file; outside,
		// the kubeconfig context's namespace or "default".
		ns, _, err := loader.Namespace()
		if err != nil {
			return nil, nil, fmt.Errorf("find namespace: %w", err)
		}
		namespace = ns
	}
	cfg.Namespace = namespace

	restCfg.QPS = float32(cfg.QPS)
	restCfg.Burst = cfg.Burst
	restCfg.UserAgent = "gmini-backend"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	return client, restCfg, nil
}

// apiReady asks the API server's own readiness endpoint, which every
// authenticated identity may read.
func apiReady(ctx context.Context, client kubernetes.Interface) error {
	if err := client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		return fmt.Errorf("kubernetes API not ready: %w", err)
	}
	return nil
}
