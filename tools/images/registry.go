package images

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an OCI registry a cluster pulls its images from: where this
// machine pushes, the name image references use, and the name pods reach
// it by. Both cluster providers give one (cluster.Provider.Registry).
type Registry struct {
	// Host is host:port to push to from this machine and to name in image
	// references: the nodes' containerd resolves it to the registry.
	Host string
	// InCluster is host:port at which pods reach the registry (a Flux
	// OCIRepository's URL); often Host.
	InCluster string
	// CA is the PEM certificate of the authority that issued the
	// registry's TLS certificate, or nil if it serves plain HTTP (kind's
	// local-registry pattern).
	CA []byte
}

// Repository is the repository of image under the registry, e.g.
// 198.18.0.2:5000/gmini-backend.
func (r Registry) Repository(image string) (name.Repository, error) {
	var opts []name.Option
	if r.CA == nil {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(r.Host+"/"+image, append(opts, name.StrictValidation)...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("registry %s: image %s: %w", r.Host, image, err)
	}
	return repo, nil
}

// Transport is what pushes from this machine use: TLS trusting only CA
// (when set), and never an HTTP proxy, which would take the traffic off
// the machine.
func (r Registry) Transport() (http.RoundTripper, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if r.CA != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(r.CA) {
			return nil, errors.New("registry " + r.Host + ": CA is not PEM")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	tr.ResponseHeaderTimeout = 30 * time.Second
	return tr, nil
}

// RemoteOptions are go-containerregistry's options for this registry:
// its transport, anonymous access.
func (r Registry) RemoteOptions() ([]remote.Option, error) {
	tr, err := r.Transport()
	if err != nil {
		return nil, err
	}
	return []remote.Option{remote.WithTransport(tr), remote.WithAuth(authn.Anonymous)}, nil
}
