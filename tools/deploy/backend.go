package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Backend talks to the gmini-backend Service through the API server's
// service proxy, so tests and `make up` reach it from the host without a
// port-forward or a route into the cluster. The path, port and body are
// exactly what the tutorial's frontend uses inside the cluster.
type Backend struct {
	Client    kubernetes.Interface
	Namespace string
}

// Response is one answer from the backend.
type Response struct {
	Code int
	Body []byte
}

// Do sends one request to the backend. A non-2xx answer from the backend is
// a Response, not an error; errors mean the request did not get through.
func (b Backend) Do(ctx context.Context, method, path, contentType string, body []byte) (Response, error) {
	u, err := url.Parse(path)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req := b.Client.CoreV1().RESTClient().Verb(method).
		Namespace(b.Namespace).Resource("services").Name(fmt.Sprintf("%s:%d", BackendName, BackendPort)).
		SubResource("proxy").Suffix(strings.TrimPrefix(u.Path, "/"))
	// The proxy passes the query on to the backend.
	for k, vs := range u.Query() {
		for _, v := range vs {
			req = req.Param(k, v)
		}
	}
	if contentType != "" {
		req = req.SetHeader("Content-Type", contentType)
	}
	if body != nil {
		req = req.Body(body)
	}
	var code int
	res := req.Do(ctx).StatusCode(&code)
	raw, err := res.Raw()
	if code == 0 {
		return Response{}, fmt.Errorf("%s %s through the API server proxy: %w", method, path, err)
	}
	// client-go turns non-2xx answers into errors; the backend's own JSON
	// body is still there. A 503 from the proxy itself (no endpoints) has a
	// Status body instead.
	var status apierrors.APIStatus
	if err != nil && errors.As(err, &status) && len(raw) == 0 {
		raw = []byte(status.Status().Message)
	}
	return Response{Code: code, Body: raw}, nil
}

// Post sends an experiment exactly as the tutorial's frontend does.
func (b Backend) Post(ctx context.Context, body string) (Response, error) {
	return b.Do(ctx, http.MethodPost, "/experiment", "application/json", []byte(body))
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
