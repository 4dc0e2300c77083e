package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// codes is the one place where a kind of failure becomes an HTTP status.
// Packages below say what went wrong (failure.Kind); only this table says
// how HTTP spells it.
var codes = map[failure.Kind]int{
	failure.Invalid:              http.StatusBadRequest,
	failure.TooLarge:             http.StatusRequestEntityTooLarge,
	failure.URITooLong:           http.StatusRequestURITooLong,
	failure.UnsupportedMediaType: http.StatusUnsupportedMediaType,
	failure.NotFound:             http.StatusNotFound,
	failure.MethodNotAllowed:     http.StatusMethodNotAllowed,
	failure.Conflict:             http.StatusConflict,
	failure.Unavailable:          http.StatusServiceUnavailable,
	failure.Upstream:             http.StatusBadGateway,
	failure.Unauthenticated:      http.StatusUnauthorized,
	failure.Forbidden:            http.StatusForbidden,
	failure.TooManyRequests:      http.StatusTooManyRequests,
	failure.Internal:             http.StatusInternalServerError,
}

// retryAfterSeconds is what a 503 asks clients to wait: about as long as
// an informer needs to see a fixed template, or an API server to restart.
const retryAfterSeconds = "5"

// StatusOf is the HTTP status for err, for the handlers beside this
// package's that answer the same failures (the status page, package ui).
func StatusOf(err error) int { return statusOf(err) }

// statusOf is the HTTP status for err.
func statusOf(err error) int {
	if code, ok := codes[failure.KindOf(err)]; ok {
		return code
	}
	return http.StatusInternalServerError
}

// fail answers with a JSON error a person can act on, and returns the
// status it sent. Answers to conditions expected to pass carry
// Retry-After.
func (s *server) fail(c *gin.Context, err error) int {
	code := statusOf(err)
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		c.Header("Retry-After", retryAfterSeconds)
	}
	c.AbortWithStatusJSON(code, wire.Error{Error: failure.MessageOf(err)})
	return code
}
