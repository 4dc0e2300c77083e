package auth

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

func TestAuthorizeQueue(t *testing.T) {
	api := newAPIServer(t)
	v, err := New(api.client, "gmini", []string{"gmini"})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/experiment", nil)
	r.Header.Set("Authorization", "Bearer good")
	u, err := v.Check(r, VerbCreate, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := WithUser(context.Background(), u)
	if User(ctx).GetName() != "alice" || User(context.Background()) != nil {
		t.Fatalf("User(ctx) = %v", User(ctx))
	}
	if err := v.AuthorizeQueue(ctx, User(ctx), "team-a"); err != nil {
		t.Errorf("team-a: %v", err)
	}
	if api.lastVerb != VerbUse || api.lastGroup != "gmini.dev/queues" || api.lastName != "team-a" || api.lastResNS != "gmini" {
		t.Errorf("access review asked %s %s %q in %s; want use gmini.dev/queues \"team-a\" in gmini", api.lastVerb, api.lastGroup, api.lastName, api.lastResNS)
	}
	err = v.AuthorizeQueue(ctx, User(ctx), "team-b")
	want := `user "alice" may not use queue "team-b" (queues.gmini.dev) in namespace gmini: no RBAC policy matched; bind a role that grants use on queues.gmini.dev (resourceNames ["team-b"], or all queues)`
	if failure.KindOf(err) != failure.Forbidden || !strings.Contains(err.Error(), want) {
		t.Errorf("team-b: %v; want Forbidden saying %q", err, want)
	}
	// Cached as Check's reviews are: one review per queue.
	before := api.sars.Load()
	for range 20 {
		_ = v.AuthorizeQueue(ctx, User(ctx), "team-a")
	}
	if n := api.sars.Load() - before; n != 0 {
		t.Errorf("20 more requests for team-a made %d access reviews, want 0 (cached)", n)
	}
	if err := v.AuthorizeQueue(context.Background(), nil, "team-a"); failure.KindOf(err) != failure.Unauthenticated {
		t.Errorf("no user: %v", err)
	}
}
