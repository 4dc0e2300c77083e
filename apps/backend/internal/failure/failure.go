// Package failure classifies errors by what a client can do about them. Each
// layer says what kind of failure it met (the request is invalid, the
// experiment is not found, the template is unusable, ...); the HTTP layer
// turns the kind into a status code in one table. Errors from client-go that
// no layer classified are classified here, from the Kubernetes API status or
// the network error they carry.
package failure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Kind is what went wrong, from the client's point of view.
type Kind string

// The kinds. Adding one means adding it to Kinds and its status to
// internal/api's table.
const (
	// Invalid: the request is malformed; the client must change it.
	Invalid Kind = "invalid"
	// TooLarge: the request body is over the limit.
	TooLarge Kind = "too large"
	// URITooLong: the request target is over the limit.
	URITooLong Kind = "uri too long"
	// UnsupportedMediaType: the body is not JSON.
	UnsupportedMediaType Kind = "unsupported media type"
	// NotFound: no such experiment or route.
	NotFound Kind = "not found"
	// MethodNotAllowed: the route exists, not for this method.
	MethodNotAllowed Kind = "method not allowed"
	// Conflict: the request clashes with an experiment's current state
	// (same ID with another body, a Job being deleted, no output yet).
	Conflict Kind = "conflict"
	// Unavailable: the backend cannot serve now but expects to later: the
	// API server is unreachable or overloaded, the template is missing,
	// unusable or not loaded yet. Clients retry after Retry-After.
	Unavailable Kind = "unavailable"
	// Upstream: the API server answered and refused (RBAC, validation).
	Upstream Kind = "upstream"
	// Unauthenticated: the request carries no token, or one the API server
	// does not accept.
	Unauthenticated Kind = "unauthenticated"
	// Forbidden: the caller may not do this (RBAC on experiments.gmini.dev).
	Forbidden Kind = "forbidden"
	// TooManyRequests: a limit holds the request back: a ResourceQuota
	// on Jobs or pods, the API server's own flow control, or the
	// backend's bound on concurrent POSTs. Clients retry after
	// Retry-After.
	TooManyRequests Kind = "too many requests"
	// Internal: a bug or an unclassified error.
	Internal Kind = "internal"
)

// Kinds returns every kind, for tables that must cover them all.
func Kinds() []Kind {
	return []Kind{Invalid, TooLarge, URITooLong, UnsupportedMediaType, NotFound, MethodNotAllowed,
		Conflict, Unavailable, Upstream, Unauthenticated, Forbidden, TooManyRequests, Internal}
}

// Error is an error with a Kind and a message a person can act on.
type Error struct {
	Kind    Kind
	Message string
	// Err is the cause, if any; its text follows Message.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Message
	case e.Message == "":
		return e.Err.Error()
	}
	return e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error of kind with a formatted message.
func New(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns err classified as kind, its message prefixed with a formatted
// context.
func Wrap(kind Kind, err error, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the outermost *Error in err's chain: the layer
// closest to the client decided last. Without one, it classifies what
// client-go and net/http return; anything else is Internal.
func KindOf(err error) Kind {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return TooLarge
	}
	if overQuota(err) || apierrors.IsTooManyRequests(err) {
		return TooManyRequests
	}
	if unavailable(err) {
		return Unavailable
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		// The API server answered but refused (forbidden, invalid, ...):
		// the backend's upstream failed, not the client.
		return Upstream
	}
	return Internal
}

// unavailable reports errors that mean "the API server cannot serve right
// now": retrying later may succeed.
func unavailable(err error) bool {
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &netErr) ||
		apierrors.IsServiceUnavailable(err) ||
		apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err)
}

// overQuota reports the API server's refusal of an object that would exceed
// a ResourceQuota: a 403 whose message says so (the quota admission plugin
// has no reason of its own).
func overQuota(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

// MessageOf is what a client may read about err: the whole chain, which
// names the object and the API server's reason. Two exceptions: request-size
// errors, whose text is Go's, and network errors, whose text carries the API
// server's internal address; the log keeps the full error.
func MessageOf(err error) string {
	if err == nil {
		return ""
	}
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return "body exceeds the limit of " + strconv.FormatInt(maxBytes.Limit, 10) + " bytes"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		// Keep the context this package's errors add (written by gmini,
		// so free of addresses), drop the rest of the chain. client-go
		// speaks HTTP: a *url.Error is the API server; anything else (the
		// history database) is named by that context.
		var msg strings.Builder
		for e := error(err); e != nil; e = errors.Unwrap(e) {
			if f, ok := e.(*Error); ok && f.Message != "" {
				msg.WriteString(f.Message + ": ")
			}
		}
		what := "unreachable"
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			what = "the Kubernetes API server is unreachable"
		}
		return msg.String() + what + " (" + rootCause(err).Error() + "); retry later"
	}
	return err.Error()
}

// rootCause is the innermost error of a chain, such as "connection refused".
func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
