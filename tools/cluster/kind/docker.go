package kind

import (
	"context"
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
