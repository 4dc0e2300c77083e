package local_test

import (
	"context"
	"os"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	"github.com/gmini-dev/gmini/tools/cluster/local"
)

// A TestMain that runs the suite against a local cluster, loading the
// project's images first and keeping the logs of every run.
func ExampleNewProvider() {
	var m *testing.M // the *testing.M given to TestMain
	testenv := env.New()
	name := "e2e"
	testenv.Setup(
		envfuncs.CreateClusterWithOpts(local.NewProvider(), name,
			local.ClusterOpt(local.WithKubeBinary("_output/bin/kube")),
			local.ClusterOpt(local.WithPauseImage("_output/images/pause.tar", "gmini-pause:dev"))),
		envfuncs.LoadImageArchiveToCluster(name, "_output/images/runner.tar"),
		envfuncs.LoadImageArchiveToCluster(name, "_output/images/backend.tar"),
	).Finish(
		envfuncs.ExportClusterLogs(name, "_output/logs"),
		envfuncs.DestroyCluster(name),
	)
	os.Exit(testenv.Run(m))
}

// A reliability step that takes the API server away and brings it back.
func ExampleCluster_StopComponent() {
	restartAPI := func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		p, _ := envfuncs.GetClusterFromContext(ctx, "e2e")
		c := p.(*local.Cluster)
		if err := c.StopComponent(ctx, local.APIServer); err != nil {
			return ctx, err
		}
		// ... check the backend answers 503 ...
		return ctx, c.StartComponent(ctx, local.APIServer) // waits for /readyz
	}
	_ = restartAPI
}
