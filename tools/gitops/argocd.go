package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// Argo CD's Go module, whose manifests/crds hold the CRDs its releases
// install. v3.6 needs Go 1.27; v3.5.7 is the newest v3.5 and builds (and
// downloads) with Go 1.26.
const (
	ArgoCDModule  = "github.com/argoproj/argo-cd/v3"
	ArgoCDVersion = "v3.5.7"
)

// ArgoCDApplicationCRD reads the Application CRD from Argo CD's module
// source, downloading the module (about 56 MB) into the module cache the
// first time.
func ArgoCDApplicationCRD(ctx context.Context) (*unstructured.Unstructured, error) {
	mod, err := modbuild.Download(ctx, ArgoCDModule, ArgoCDVersion)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(mod.Dir, "manifests", "crds", "application-crd.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("argo cd %s: %w", ArgoCDVersion, err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	crd := &unstructured.Unstructured{}
	if err := crd.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if crd.GetKind() != "CustomResourceDefinition" || crd.GetName() != "applications.argoproj.io" {
		return nil, fmt.Errorf("%s: %s %s, want the CustomResourceDefinition applications.argoproj.io", path, crd.GetKind(), crd.GetName())
	}
	return crd, nil
}
