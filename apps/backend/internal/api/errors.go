package api

import (
	"context"
	"errors"
	"net"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
)

// statusFor maps an error from any layer onto the HTTP status a client can
// act on. Errors from the Kubernetes API are never hidden behind a 2xx.
func statusFor(err error) int {
	var maxBytes *http.MaxBytesError
	switch {
	case experiment.IsInputError(err):
		return http.StatusBadRequest
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, lifecycle.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, spawn.ErrConflict), errors.Is(err, lifecycle.ErrNoOutput):
		return http.StatusConflict
	case unavailable(err):
		return http.StatusServiceUnavailable
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		// The API server answered but refused (forbidden, invalid, ...):
		// the backend's upstream failed, not the client.
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// unavailable reports errors that mean "the API server cannot be reached
// right now": retrying later may succeed.
func unavailable(err error) bool {
	var netErr net.Error
	switch {
	case errors.Is(err, template.ErrNotSynced),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr),
		apierrors.IsServiceUnavailable(err),
		apierrors.IsServerTimeout(err),
		apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err):
		return true
	}
	return false
}
