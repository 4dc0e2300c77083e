package auth

import "net/http"

// CookieName is the cookie in which the status page (package ui) keeps the
// token a person signed in with: HttpOnly, SameSite=Strict, never in a URL.
const CookieName = "gmini_token"

// WithCookieToken returns r carrying the token of its CookieName cookie as
// its bearer token, so that Check reviews it like a header's; r itself when
// it has an Authorization header (which wins) or no such cookie.
//
// Only requests that change nothing may be authenticated this way (a
// browser's EventSource cannot set a header, but it sends the page's
// cookie): a cookie rides along with requests other sites make the browser
// send, so state-changing routes must keep requiring the header, or, as
// the status page's own forms do, also prove that the page sent them.
func WithCookieToken(r *http.Request) *http.Request {
	if r.Header.Get("Authorization") != "" {
		return r
	}
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return r
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+c.Value)
	return r
}
