//go:build e2e

package e2e

import (
	"context"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/gmini-dev/gmini/tools/internal/jobtrack"
)

// track starts following the Jobs and pods of namespace (jobtrack); call
// Stop when done.
func track(ctx context.Context, t *testing.T, cfg *envconf.Config, namespace string) *jobtrack.Tracker {
	t.Helper()
	tr, err := jobtrack.Start(ctx, clientset(t, cfg), namespace)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
