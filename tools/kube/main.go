// Command kube is one multi-call binary holding the Kubernetes v1.34.4 node and
// control-plane components, and etcd v3.6.4 (the version kubeadm and kind run
// with v1.34), so the local node needs a single build instead of six binaries
// that together weigh over 400 MB.
//
// Choose the component with the first argument (kube kubelet --flags...) or by
// calling the binary through a link named after it (kubelet --flags...).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	_ "time/tzdata" // CronJob time zones in the apiserver and controller-manager

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// components maps each name to the constructor its upstream main uses, so a
// component behaves exactly as its standalone binary would.
var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
	"etcd":                    etcdCommand,
}

// etcdCommand runs etcd's own main with every argument unparsed: etcd reads
// its flags itself and exits, like its standalone binary. Debian's etcd
// (3.4) cannot answer the API server's watch progress requests, so the API
// server would neither serve consistent lists from its cache nor stream an
// informer's first list (watch-list), unlike any cluster of this version.
func etcdCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "etcd",
		DisableFlagParsing: true,
		Run:                func(_ *cobra.Command, args []string) { etcdmain.Main(append([]string{"etcd"}, args...)) },
	}
}

func main() {
	os.Exit(run(os.Args, os.Stderr))
}

func run(argv []string, stderr io.Writer) int {
	name, args, ok := dispatch(argv, components)
	if !ok {
		usage(stderr, argv)
		return 2
	}
	cmd := components[name]()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

// dispatch picks the component from argv[0]'s base name (a link called
// kubelet) or else from argv[1] (kube kubelet ...), and returns the arguments
// that belong to it.
func dispatch[T any](argv []string, known map[string]T) (name string, args []string, ok bool) {
	if len(argv) == 0 {
		return "", nil, false
	}
	if base := filepath.Base(argv[0]); has(known, base) {
		return base, argv[1:], true
	}
	if len(argv) > 1 && has(known, argv[1]) {
		return argv[1], argv[2:], true
	}
	return "", nil, false
}

func has[T any](m map[string]T, k string) bool {
	_, ok := m[k]
	return ok
}

func usage(w io.Writer, argv []string) {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	self := "kube"
	if len(argv) > 0 {
		self = filepath.Base(argv[0])
	}
	if len(argv) > 1 {
		fmt.Fprintf(w, "%s: unknown component %q\n", self, argv[1])
	}
	fmt.Fprintf(w, "usage: %s COMPONENT [flags...]\n   or: COMPONENT [flags...]  (through a link named after it)\ncomponents: %s\n",
		self, strings.Join(names, ", "))
}
