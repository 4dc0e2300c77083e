package deploy

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
)

// Backend is the gmini-backend Service of Namespace, reached through the
// API server's service proxy, so tests and `make up` reach it from the
// host without a port-forward or a route into the cluster.
//
// The proxy passes on the path, the query, the body and the request's
// headers (Content-Type, Accept, Last-Event-ID), streams the answer as it
// comes (a log follow, plain or Server-Sent Events) and relays the
// backend's error answers as they are; so the Go client works through it
// unchanged. It does not pass an Authorization header: the API server
// takes it as the caller's own credentials and removes it. A backend with
// --auth kubernetes is reached with a port-forward instead; do not give
// Client a token (gmini.WithToken), which the API server would take as
// the caller's.
type Backend struct {
	// Config is the API server's: its address, and the credentials the
	// proxy request is made with.
	Config    *rest.Config
	Namespace string
}

// URL is the Service's address through the proxy,
// <API server>/api/v1/namespaces/<namespace>/services/gmini-backend:8080/proxy:
// the backend's paths go after it.
func (b Backend) URL() (string, error) {
	u, _, err := rest.DefaultServerUrlFor(b.Config)
	if err != nil {
		return "", fmt.Errorf("the API server's address: %w", err)
	}
	return u.JoinPath("api/v1/namespaces", b.Namespace, "services", fmt.Sprintf("%s:%d", BackendName, BackendPort), "proxy").String(), nil
}

// HTTPClient sends requests to URL with Config's credentials (client-go's
// transport, without its rate limiter), for what the Go client does not
// send: a probe, a malformed request.
func (b Backend) HTTPClient() (*http.Client, error) {
	hc, err := rest.HTTPClientFor(b.Config)
	if err != nil {
		return nil, fmt.Errorf("an HTTP client for the API server: %w", err)
	}
	return hc, nil
}

// Client is the Go client of the backend, through the proxy.
func (b Backend) Client(opts ...gmini.Option) (*gmini.Client, error) {
	u, err := b.URL()
	if err != nil {
		return nil, err
	}
	hc, err := b.HTTPClient()
	if err != nil {
		return nil, err
	}
	return gmini.New(u, append([]gmini.Option{gmini.WithHTTPClient(hc)}, opts...)...)
}

// ClusterIPURL is the backend Service's address, http://<ClusterIP>:8080.
// Only the local provider's host routes the service range into the
// cluster, so only it can use this; anything else goes through Backend.
func ClusterIPURL(ctx context.Context, client kubernetes.Interface, namespace string) (string, error) {
	svc, err := client.CoreV1().Services(namespace).Get(ctx, BackendName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("get service %s/%s: %w", namespace, BackendName, err)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return "", fmt.Errorf("service %s/%s has no ClusterIP (%q): %w", namespace, BackendName, svc.Spec.ClusterIP, err)
	}
	return "http://" + netip.AddrPortFrom(ip, BackendPort).String(), nil
}
