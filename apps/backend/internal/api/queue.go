package api

import (
	"context"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
)

// authorizeQueue checks, when the backend authenticates clients, that the
// caller may use the queue its experiment goes to, named or the default:
// one more access review per request. The queue is resolved here and again
// by Submit; both read the same informer cache.
func (s *server) authorizeQueue(ctx context.Context, requested string) error {
	if s.Auth == nil {
		return nil
	}
	queue, err := s.Experiments.Queue(ctx, requested)
	if err != nil || queue == "" {
		return err
	}
	return s.Auth.AuthorizeQueue(ctx, auth.User(ctx), queue)
}
