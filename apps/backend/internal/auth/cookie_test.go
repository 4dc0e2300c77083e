package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWithCookieToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		header        string
		cookie        *http.Cookie
		want          string
		sameAsRequest bool
	}{
		{name: "the cookie's token as the bearer token", cookie: &http.Cookie{Name: CookieName, Value: "tok"}, want: "Bearer tok"},
		{name: "a header wins over the cookie", header: "Bearer header", cookie: &http.Cookie{Name: CookieName, Value: "tok"}, want: "Bearer header", sameAsRequest: true},
		{name: "no cookie", want: "", sameAsRequest: true},
		{name: "an empty cookie", cookie: &http.Cookie{Name: CookieName, Value: ""}, want: "", sameAsRequest: true},
		{name: "another cookie", cookie: &http.Cookie{Name: "other", Value: "tok"}, want: "", sameAsRequest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/events", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if tt.cookie != nil {
				r.AddCookie(tt.cookie)
			}
			got := WithCookieToken(r)
			if h := got.Header.Get("Authorization"); h != tt.want {
				t.Errorf("Authorization = %q, want %q", h, tt.want)
			}
			if (got == r) != tt.sameAsRequest {
				t.Errorf("returned the request itself: %v, want %v", got == r, tt.sameAsRequest)
			}
			if got != r && r.Header.Get("Authorization") != "" {
				t.Error("the caller's request was changed")
			}
		})
	}
}
