package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// How the page keeps a person signed in, and proves its own forms.
//
// With authentication on, the token a person signs in with is kept in the
// cookie auth.CookieName: HttpOnly (no script reads it), SameSite=Strict
// (no other site's page makes the browser send it), Path=/ (the API's
// streams, which the page's EventSources read, take it for reads), Secure
// when the page came over TLS. It is reviewed (TokenReview and
// SubjectAccessReview, cached by the reviewer) on every request, never put
// in a URL and never logged.
//
// Every POST of the page (cancel, sign in, sign out) must come from the
// page: the browser's Sec-Fetch-Site, else its Origin, must say the request
// is same-origin (http.CrossOriginProtection), and, but for signing in, it
// must carry the page's CSRF token, an HMAC keyed by the session's secret:
// the token cookie, or without authentication a random cookie of its own.
// The key is the cookie rather than a per-process secret so that any
// replica accepts a token another rendered (prod runs two behind one
// Service); another site can read neither.

// sessionCookie holds the random secret of a browser's session when
// authentication is off; the CSRF token is derived from it.
const sessionCookie = "gmini_session"

// The CSRF token's form field and header (the script's fetch).
const (
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
)

// maxTokenBytes bounds a token to what fits one cookie (browsers keep
// 4096 bytes of name and value); Kubernetes tokens are about 1 KiB.
const maxTokenBytes = 4000

// maxFormBytes bounds the body of the page's POSTs.
const maxFormBytes = 16 << 10

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   r.TLS != nil,
	})
}

// sessionSecret is the secret the CSRF token is derived from: the token
// cookie with authentication on (empty before signing in), else the
// session cookie, made now if the browser has none.
func (h *handler) sessionSecret(w http.ResponseWriter, r *http.Request) string {
	if h.Auth != nil {
		if c, err := r.Cookie(auth.CookieName); err == nil {
			return c.Value
		}
		return ""
	}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		return c.Value
	}
	if w == nil {
		return ""
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	setCookie(w, r, sessionCookie, v, 0)
	return v
}

// csrfToken is the CSRF token of a session; empty without one.
func csrfToken(secret string) string {
	if secret == "" {
		return ""
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("gmini status page: csrf v1"))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkOrigin refuses a POST another site's page made the browser send.
func (h *handler) checkOrigin(r *http.Request) error {
	if err := h.cross.Check(r); err != nil {
		return failure.New(failure.Forbidden, "cross-origin request refused: the status page's actions are only taken from its own pages")
	}
	return nil
}

// checkPost refuses a POST that does not come from one of the page's own
// forms: cross-origin, or without the session's CSRF token.
func (h *handler) checkPost(r *http.Request) error {
	if err := h.checkOrigin(r); err != nil {
		return err
	}
	want := csrfToken(h.sessionSecret(nil, r))
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	if want == "" || !hmac.Equal([]byte(got), []byte(want)) {
		return failure.New(failure.Forbidden, "missing or wrong CSRF token: reload the page and try again")
	}
	return nil
}

// authorize reviews the request's token (its Authorization header, else
// the page's cookie) for verb on experiment id, when the backend
// authenticates. Without a token it answers the sign-in form; with one the
// API server does not accept, the form again, without the cookie.
func (h *handler) authorize(w http.ResponseWriter, r *http.Request, root, verb, id string) (user.Info, bool) {
	if h.Auth == nil {
		return nil, true
	}
	req := auth.WithCookieToken(r)
	if req.Header.Get("Authorization") == "" {
		h.loginForm(w, r, root, http.StatusUnauthorized, "", nextOf(r))
		return nil, false
	}
	who, err := h.Auth.Check(req, verb, id)
	switch {
	case err == nil:
		return who, true
	case failure.KindOf(err) == failure.Unauthenticated:
		setCookie(w, r, auth.CookieName, "", -1)
		h.loginForm(w, r, root, http.StatusUnauthorized, "The token was not accepted (it may have expired): sign in again.", nextOf(r))
	default:
		h.fail(w, r, root, err)
	}
	return nil, false
}

type loginData struct {
	// Next is where to go once signed in, relative to /ui/.
	Next    string
	Message string
}

// loginForm answers the sign-in form in place of the page asked for,
// which next names relative to /ui/.
func (h *handler) loginForm(w http.ResponseWriter, r *http.Request, root string, code int, msg, next string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="gmini"`)
	p := h.newPage(w, r, "login", "Sign in", root, nil)
	p.Data = loginData{Next: next, Message: msg}
	h.render(w, r, code, p)
}

// nextOf names the page r asked for, relative to /ui/.
func nextOf(r *http.Request) string {
	next := strings.TrimPrefix(r.URL.Path, "/ui/")
	if r.URL.RawQuery != "" {
		next += "?" + r.URL.RawQuery
	}
	return next
}

// login takes the token of the sign-in form: once the API server accepts
// it, it goes into the cookie and the browser back to the page it asked
// for.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	const root = rootTop
	if h.Auth == nil {
		seeOther(w, "./")
		return
	}
	// A sign-in forced from another site would put the browser under
	// someone else's name.
	if err := h.checkOrigin(r); err != nil {
		h.fail(w, r, root, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	token := strings.TrimSpace(r.PostFormValue("token"))
	token = strings.TrimSpace(strings.TrimPrefix(token, "Bearer "))
	next := safeNext(r.PostFormValue("next"))
	if !validToken(token) {
		h.loginForm(w, r, root, http.StatusBadRequest, "That is not a token: paste a Kubernetes token for the audience gmini.", next)
		return
	}
	req := r.Clone(r.Context())
	req.Header.Set("Authorization", "Bearer "+token)
	_, err := h.Auth.Check(req, auth.VerbList, "")
	switch failure.KindOf(err) {
	case "", failure.Forbidden:
		// Signed in: what the token may see is each page's own review.
	case failure.Unauthenticated:
		h.loginForm(w, r, root, http.StatusUnauthorized, "The API server did not accept this token for the audience gmini.", next)
		return
	default:
		h.fail(w, r, root, err)
		return
	}
	setCookie(w, r, auth.CookieName, token, 0)
	seeOther(w, next)
}

// logout clears the cookie.
func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	const root = rootTop
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := h.checkPost(r); err != nil {
		h.fail(w, r, root, err)
		return
	}
	setCookie(w, r, auth.CookieName, "", -1)
	seeOther(w, "./")
}

// validToken reports whether s can be a bearer token kept in a cookie:
// the characters of a cookie value (RFC 6265), which those of JWTs are.
func validToken(s string) bool {
	if s == "" || len(s) > maxTokenBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// safeNext is the page to go to after signing in, relative to /ui/: a
// relative path that stays on the page, else the list.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		strings.HasPrefix(next, "/") || strings.ContainsAny(next, "\\\r\n") || strings.Contains(u.Path, "..") {
		return "./"
	}
	return next
}

// seeOther redirects a POST to a page. The Location is relative (see the
// package's doc): http.Redirect would make it absolute.
func seeOther(w http.ResponseWriter, location string) {
	w.Header().Set("Location", location)
	w.WriteHeader(http.StatusSeeOther)
}

// wantsJSON reports whether the script sent the request (it asks for
// JSON), rather than a form.
func wantsJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
				return true
			}
		}
	}
	return false
}

// cancel is the cancel button: the same cancel as DELETE
// /experiments/{id}, from the page's form (answered with the experiment's
// page) or its script (answered as the API answers).
func (h *handler) cancel(w http.ResponseWriter, r *http.Request) {
	const root = "../../"
	id := r.PathValue("id")
	answer := func(err error) {
		if !wantsJSON(r) {
			h.fail(w, r, root, err)
			return
		}
		code := api.StatusOf(err)
		h.Logger.InfoContext(r.Context(), "status page cancel refused", "id", id, "code", code, "err", err)
		writeJSON(w, code, wire.Error{Error: failure.MessageOf(err)})
	}
	if err := experiment.ValidateID(id); err != nil {
		answer(err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := h.checkPost(r); err != nil {
		answer(err)
		return
	}
	var name string
	if h.Auth != nil {
		req := auth.WithCookieToken(r)
		if req.Header.Get("Authorization") == "" {
			answer(failure.New(failure.Unauthenticated, "sign in first"))
			return
		}
		who, err := h.Auth.Check(req, auth.VerbDelete, id)
		if err != nil {
			answer(err)
			return
		}
		name = who.GetName()
	}
	ctx, cancel := h.context(r)
	defer cancel()
	res, err := h.Experiments.Cancel(ctx, id)
	if err != nil {
		answer(err)
		return
	}
	if res.Deleted {
		h.Logger.InfoContext(ctx, "experiment deleted", "id", id, "job", res.Job, "user", name, "via", "status page")
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, wire.Cancellation{ID: id, Job: res.Job, Deleted: res.Deleted, State: res.State})
		return
	}
	// From /ui/experiments/{id}/cancel, back to /ui/experiments/{id}.
	seeOther(w, "../"+url.PathEscape(id))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
