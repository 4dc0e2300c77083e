// Package auth decides who may call the backend, the Kubernetes way: a
// client sends a Kubernetes token (a pod's projected ServiceAccount token,
// or any token the API server accepts), the API server authenticates it
// (TokenReview) and authorizes the request (SubjectAccessReview) on a
// virtual resource, experiments.gmini.dev, in the backend's namespace. So
// RBAC, not a new identity system, says who may submit, read and cancel.
//
// The delegating authenticator and authorizer of k8s.io/apiserver do the
// reviews, with their caches (as kube-rbac-proxy and controller-runtime's
// metrics filters use them): a client's repeated requests cost one review
// per cache period, not one per request.
package auth

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/client-go/kubernetes"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// The virtual resource the backend authorizes requests on.
const (
	Group    = "gmini.dev"
	Resource = "experiments"
)

// Verbs of experiments.gmini.dev, one per kind of request.
const (
	VerbCreate = "create" // POST /experiment
	VerbGet    = "get"    // GET /experiments/{id} and its logs
	VerbList   = "list"   // GET /experiments
	VerbDelete = "delete" // DELETE /experiments/{id}
)

// roleFor names, for each verb, the smallest of the ClusterRoles that
// k8s/auth/roles.yaml ships for clients that grants it, so that a 403 says
// which one to bind.
var roleFor = map[string]string{
	VerbCreate: "gmini-submitter",
	VerbGet:    "gmini-viewer",
	VerbList:   "gmini-viewer",
	VerbDelete: "gmini-canceller",
}

// Review caches: a token is looked up again after tokenCacheTTL; an
// allowed request after allowCacheTTL, a denied one sooner, so a new
// RoleBinding takes effect quickly.
const (
	tokenCacheTTL = 2 * time.Minute
	allowCacheTTL = 5 * time.Minute
	denyCacheTTL  = 30 * time.Second
	reviewTimeout = 10 * time.Second
)

// Reviewer authenticates and authorizes requests through the API server.
type Reviewer struct {
	authn     authenticator.Request
	authz     authorizer.Authorizer
	namespace string
	audiences authenticator.Audiences
}

// New returns a Reviewer for the backend in namespace. Tokens must be meant
// for one of audiences (e.g. "gmini"), so a token issued for the API server
// itself, or for another service, is refused.
func New(client kubernetes.Interface, namespace string, audiences []string) (*Reviewer, error) {
	// The same retries the API server's own delegating options use.
	backoff := &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		TokenAccessReviewClient:  client.AuthenticationV1(),
		TokenAccessReviewTimeout: reviewTimeout,
		WebhookRetryBackoff:      backoff,
		CacheTTL:                 tokenCacheTTL,
		APIAudiences:             authenticator.Audiences(audiences),
	}.New()
	if err != nil {
		return nil, fmt.Errorf("token authenticator: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(),
		AllowCacheTTL:             allowCacheTTL,
		DenyCacheTTL:              denyCacheTTL,
		WebhookRetryBackoff:       backoff,
	}.New()
	if err != nil {
		return nil, fmt.Errorf("access reviewer: %w", err)
	}
	return &Reviewer{authn: authn, authz: authz, namespace: namespace, audiences: audiences}, nil
}

// Check authenticates r and authorizes verb on experiment id (empty for
// create and list). It returns who made the request, or an error of kind
// Unauthenticated (no or bad token), Forbidden (RBAC says no, with who and
// what) or Unavailable (the API server could not answer).
func (v *Reviewer) Check(r *http.Request, verb, id string) (user.Info, error) {
	// The token review checks the audience only when the request asks for
	// one; without it a token issued for the API server itself would do.
	r = r.WithContext(authenticator.WithAudiences(r.Context(), v.audiences))
	resp, ok, err := v.authn.AuthenticateRequest(r)
	switch {
	case err != nil && failure.KindOf(err) == failure.Unavailable:
		return nil, failure.Wrap(failure.Unavailable, err, "authenticate the request: the token review failed")
	case err != nil || !ok:
		return nil, failure.New(failure.Unauthenticated,
			"authentication required: send Authorization: Bearer <token>, a Kubernetes token for the audience gmini (e.g. a projected ServiceAccount token)")
	}
	attrs := authorizer.AttributesRecord{
		User:            resp.User,
		Verb:            verb,
		Namespace:       v.namespace,
		APIGroup:        Group,
		APIVersion:      "v1",
		Resource:        Resource,
		Name:            id,
		ResourceRequest: true,
	}
	decision, reason, err := v.authz.Authorize(r.Context(), attrs)
	if err != nil && decision != authorizer.DecisionAllow {
		return nil, failure.Wrap(failure.Unavailable, err, "authorize %s of experiments for %q: the access review failed", verb, resp.User.GetName())
	}
	if decision != authorizer.DecisionAllow {
		msg := fmt.Sprintf("user %q may not %s experiments.%s in namespace %s", resp.User.GetName(), verb, Group, v.namespace)
		if id != "" {
			msg = fmt.Sprintf("user %q may not %s experiment %q (experiments.%s) in namespace %s", resp.User.GetName(), verb, id, Group, v.namespace)
		}
		if reason != "" {
			msg += ": " + reason
		}
		return nil, failure.New(failure.Forbidden, "%s; bind the ClusterRole %s, or another role that grants %s on experiments.%s", msg, roleFor[verb], verb, Group)
	}
	return resp.User, nil
}

type userKey struct{}

// WithUser returns ctx carrying who made the request.
func WithUser(ctx context.Context, u user.Info) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserName is the name of who made the request ctx belongs to, "" when the
// backend does not authenticate.
func UserName(ctx context.Context) string {
	if u, ok := ctx.Value(userKey{}).(user.Info); ok {
		return u.GetName()
	}
	return ""
}
