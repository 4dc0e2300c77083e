package failure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// apiCall wraps err as client-go's HTTP client does, address and all.
func apiCall(err error) error {
	return &url.Error{Op: "Post", URL: "https://198.19.0.1:443/apis/batch/v1/namespaces/ns/jobs", Err: err}
}

func TestKindAndMessage(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	gr := schema.GroupResource{Group: "batch", Resource: "jobs"}
	forbidden := apierrors.NewForbidden(gr, "exp-x", errors.New("RBAC denied create"))
	tests := []struct {
		name     string
		err      error
		wantKind Kind
		wantMsg  string
	}{
		{"nil", nil, "", ""},
		{"plain", errors.New("boom"), Internal, "boom"},
		{"own kind", New(NotFound, "experiment %q not found", "e1"), NotFound, `experiment "e1" not found`},
		{"own kind wrapped by fmt", fmt.Errorf("get: %w", New(Conflict, "taken")), Conflict, "get: taken"},
		{"outermost kind wins", Wrap(Unavailable, New(Invalid, "bad template"), "template not usable"), Unavailable, "template not usable: bad template"},
		{"kind without message", &Error{Kind: Invalid, Err: errors.New("id is empty")}, Invalid, "id is empty"},
		// client-go's errors are *url.Error: the API server.
		{"network error", fmt.Errorf("create job ns/exp-x: %w", apiCall(refused)), Unavailable, "the Kubernetes API server is unreachable (connection refused); retry later"},
		{"network error under our context", Wrap(Unavailable, Wrap(Unavailable, apiCall(refused), "template ns/t not loaded yet"), "not ready"), Unavailable,
			"not ready: template ns/t not loaded yet: the Kubernetes API server is unreachable (connection refused); retry later"},
		{"deadline", fmt.Errorf("create job: %w", apiCall(context.DeadlineExceeded)), Unavailable, "the Kubernetes API server is unreachable (context deadline exceeded); retry later"},
		// The history database's are not: their context names them.
		{"database unreachable", Wrap(Unavailable, refused, `history: claim "e1"`), Unavailable, `history: claim "e1": unreachable (connection refused); retry later`},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), TooManyRequests, "slow down"},
		{"over quota", fmt.Errorf("create job: %w", apierrors.NewForbidden(gr, "exp-x", errors.New("exceeded quota: q, requested: count/jobs.batch=1"))), TooManyRequests,
			`create job: jobs.batch "exp-x" is forbidden: exceeded quota: q, requested: count/jobs.batch=1`},
		{"service unavailable", apierrors.NewServiceUnavailable("etcd down"), Unavailable, "etcd down"},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), Unavailable, "The create operation against jobs.batch could not be completed at this time, please try again."},
		{"timeout", apierrors.NewTimeoutError("slow", 1), Unavailable, "Timeout: slow"},
		{"forbidden", fmt.Errorf("create job: %w", forbidden), Upstream, "create job: " + forbidden.Error()},
		{"invalid object", apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "exp-x", nil), Upstream, `Job.batch "exp-x" is invalid`},
		{"body too large", fmt.Errorf("read body: %w", &http.MaxBytesError{Limit: 10}), TooLarge, "body exceeds the limit of 10 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := KindOf(tt.err); got != tt.wantKind {
				t.Errorf("KindOf = %q, want %q", got, tt.wantKind)
			}
			if got := MessageOf(tt.err); got != tt.wantMsg {
				t.Errorf("MessageOf = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestUnwrap(t *testing.T) {
	t.Parallel()
	cause := apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "p")
	err := Wrap(Conflict, cause, "read pod %s", "p")
	if !apierrors.IsNotFound(err) {
		t.Errorf("the cause is not reachable through Unwrap: %v", err)
	}
}
