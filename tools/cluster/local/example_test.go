package local_test

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	"github.com/gmini-dev/gmini/tools/cluster/local"
)

// A TestMain that runs the suite against a local cluster, loading an image
// first and keeping the logs of every run. The paths are explicit: the
// provider never guesses where a checkout keeps its build output.
func ExampleNewCluster() {
	var m *testing.M // the *testing.M given to TestMain
	testenv := env.New()
	name := "e2e"
	c := local.NewCluster(name,
		local.WithRunDir("_output/cluster/e2e"),
		local.WithKubeBinary("_output/bin/kube"),
		local.WithPauseImage("_output/images/pause.tar", "gmini-pause:dev"),
		local.WithLogger(slog.Default()))
	testenv.Setup(
		envfuncs.CreateClusterWithOpts(c, name),
		envfuncs.LoadImageArchiveToCluster(name, "_output/images/runner.tar"),
	).Finish(
		envfuncs.ExportClusterLogs(name, "_output/logs"),
		envfuncs.DestroyCluster(name),
	)
	os.Exit(testenv.Run(m))
}

// A reliability step that takes the API server away and brings it back.
func ExampleCluster_StopComponent() {
	var c *local.Cluster // made by cluster.NewLocal and created
	restartAPI := func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		if err := c.StopComponent(ctx, local.APIServer); err != nil {
			return ctx, err
		}
		// ... check the backend answers 503 ...
		return ctx, c.StartComponent(ctx, local.APIServer) // waits for /readyz
	}
	_ = restartAPI
}
