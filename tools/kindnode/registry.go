package kindnode

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// RegistryImage is the tag of the registry image RegistryImageBuild makes:
// CNCF Distribution's registry as tools/registry builds it, for kind's
// local-registry container where registry:3 cannot be pulled.
var RegistryImage = Repository + "/registry:" + modbuild.RegistryVersion

// registryConfig is the configuration registry:3 ships
// (/etc/distribution/config.yml), with nothing that talks to another host:
// plain HTTP on :5000, storage under /var/lib/registry, deletes allowed.
const registryConfig = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`

// BuildRegistryImage builds the registry (modbuild) and loads its image
// into the Docker engine as RegistryImage, unless the engine has it from
// the same binary.
func BuildRegistryImage(ctx context.Context, log *slog.Logger, l layout.Layout) (string, error) {
	prog := modbuild.Registry(l.RegistryModule())
	if err := modbuild.Build(ctx, log, prog, l.Output("bin")); err != nil {
		return "", err
	}
	bin := prog.Binaries(l.Output("bin"))[0]
	key, err := inputsKey(bin)
	if err != nil {
		return "", err
	}
	key += "-" + fmt.Sprintf("%x", len(registryConfig))
	if out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{index .Config.Labels \""+inputsLabel+"\"}}", RegistryImage).Output(); err == nil && strings.TrimSpace(string(out)) == key {
		return RegistryImage, nil
	}
	lay, err := layer([]entry{
		copyOf("/bin/registry", 0o755, bin),
		file("/etc/distribution/config.yml", 0o644, registryConfig),
		dir("/var/lib/registry"),
	})
	if err != nil {
		return "", err
	}
	img, err := image([]v1.Layer{lay}, []string{"/bin/registry", "serve", "/etc/distribution/config.yml"})
	if err != nil {
		return "", err
	}
	img, err = withLabel(img, inputsLabel, key)
	if err != nil {
		return "", err
	}
	ref, err := name.NewTag(RegistryImage)
	if err != nil {
		return "", err
	}
	tarPath := filepath.Join(l.Output("kindnode"), "registry.tar")
	if err := os.MkdirAll(filepath.Dir(tarPath), 0o755); err != nil {
		return "", err
	}
	if err := tarball.WriteToFile(tarPath, ref, img); err != nil {
		return "", err
	}
	defer os.Remove(tarPath)
	if out, err := exec.CommandContext(ctx, "docker", "load", "-i", tarPath).CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker load %s: %w: %s", tarPath, err, out)
	}
	log.Info("registry image loaded", "image", RegistryImage)
	return RegistryImage, nil
}
