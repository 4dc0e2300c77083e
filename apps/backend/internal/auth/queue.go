package auth

import (
	"context"
	"fmt"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// Queues are a second virtual resource: a caller may put experiments in
// Kueue's LocalQueue <name> only if RBAC lets it use queues.gmini.dev
// <name> in the backend's namespace. Kueue itself asks nothing of the
// submitter (the backend creates every Job), so without this anyone who
// may create experiments could take any team's quota.
const (
	QueueResource = "queues"
	VerbUse       = "use"
)

// AuthorizeQueue checks that u may use queue: nil, or an error of kind
// Forbidden (with who, the queue and the rule to grant) or Unavailable.
// The decision is cached like Check's, so a client's requests cost one
// review per queue and cache period.
func (v *Reviewer) AuthorizeQueue(ctx context.Context, u user.Info, queue string) error {
	if u == nil {
		return failure.New(failure.Unauthenticated, "authentication required to use queue %q", queue)
	}
	attrs := authorizer.AttributesRecord{
		User:            u,
		Verb:            VerbUse,
		Namespace:       v.namespace,
		APIGroup:        Group,
		APIVersion:      "v1",
		Resource:        QueueResource,
		Name:            queue,
		ResourceRequest: true,
	}
	decision, reason, err := v.authz.Authorize(ctx, attrs)
	if err != nil && decision != authorizer.DecisionAllow {
		return failure.Wrap(failure.Unavailable, err, "authorize use of queue %q for %q: the access review failed", queue, u.GetName())
	}
	if decision != authorizer.DecisionAllow {
		msg := fmt.Sprintf("user %q may not use queue %q (queues.%s) in namespace %s", u.GetName(), queue, Group, v.namespace)
		if reason != "" {
			msg += ": " + reason
		}
		return failure.New(failure.Forbidden, "%s; bind a role that grants use on queues.%s (resourceNames [%q], or all queues)", msg, Group, queue)
	}
	return nil
}

// User is who made the request ctx belongs to, nil when the backend does
// not authenticate.
func User(ctx context.Context) user.Info {
	u, _ := ctx.Value(userKey{}).(user.Info)
	return u
}
