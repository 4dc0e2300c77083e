package deploy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/client-go/rest"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
)

func TestBackendURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ host, want string }{
		{"https://10.0.0.1:6443", "https://10.0.0.1:6443/api/v1/namespaces/gmini-dev/services/gmini-backend:8080/proxy"},
		{"https://example.com/k8s/", "https://example.com/k8s/api/v1/namespaces/gmini-dev/services/gmini-backend:8080/proxy"},
	} {
		got, err := Backend{Config: &rest.Config{Host: c.host}, Namespace: Namespace}.URL()
		if err != nil || got != c.want {
			t.Errorf("URL for host %s = %q, %v; want %q", c.host, got, err, c.want)
		}
	}
}

// The Go client's requests reach the service proxy's path, with the query.
func TestBackendClient(t *testing.T) {
	t.Parallel()
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.RequestURI()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"items": [{"id": "e1", "state": "Running"}]}`))
	}))
	defer srv.Close()
	c, err := Backend{Config: &rest.Config{Host: srv.URL + "/prefix"}, Namespace: "ns"}.Client()
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.List(context.Background(), gmini.ListOptions{Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if want := "/prefix/api/v1/namespaces/ns/services/gmini-backend:8080/proxy/experiments?limit=5"; got != want {
		t.Errorf("request to %s, want %s", got, want)
	}
	if len(page.Items) != 1 || page.Items[0].ID != "e1" || page.Items[0].State != "Running" {
		t.Errorf("page %+v", page)
	}
}
