package kind

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// dockerTimeout bounds the engine check: a docker CLI pointed at a socket
// nobody listens on can hang for a long time.
const dockerTimeout = 5 * time.Second

// DockerAvailable reports whether a Docker engine answers, not merely whether
// the docker CLI is installed (which is all kind itself checks).
func DockerAvailable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").Run() == nil
}

// LocalNodeHint says how to run without kind, for errors that end a kind
// path here.
const LocalNodeHint = "use the local node instead: make up CLUSTER=local (make e2e CLUSTER=local for the suites)"

// ImageAvailable reports, as nil, that the Docker engine has image or, when
// MayPull allows it, can pull it now; kind would otherwise fail after
// creating half a cluster. A pull can take minutes; docker's own timeout
// ends it at 5.
func ImageAvailable(ctx context.Context, image string) error {
	if ImagePresent(ctx, image) {
		return nil
	}
	if !MayPull() {
		return fmt.Errorf("kind's node image %s is not in the Docker engine, and pulling is off (%s=1 allows it)", image, PullEnv)
	}
	if _, err := docker(ctx, "pull", image); err != nil {
		return fmt.Errorf("kind's node image %s is not in the Docker engine and cannot be pulled: %w", image, err)
	}
	return nil
}
