// Package webhook tells HTTP receivers about experiments' state changes:
// CloudEvents 1.0 in binary HTTP mode, signed with HMAC-SHA256 (package
// webhooksig), to the sinks of the deployment's configuration and to the
// URLs a submission named in "notify".
//
// Deliveries live in the history database, as an outbox (history's
// outbox.go): the deliverer, run by the replica holding the recorder's
// lease, turns each stored event into one delivery per matching target,
// exactly once, and attempts each until a 2xx answer, retrying with growing
// pauses for up to MaxAge. Every outbound connection goes through a dialer
// that refuses internal addresses (guard.go) on the address it connects
// to, after name resolution.
package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
)

// File is the webhooks file (--webhooks-file), YAML or JSON:
//
//	sinks:                      # every event of these states goes to each sink
//	  - name: ops               # shown in GET /experiments/{id}
//	    url: https://hooks.example.com/gmini
//	    events: [Succeeded, Failed]   # default: the final states
//	    secret: "…"             # HMAC key, at least 16 bytes
//	allowNotify:                # hosts a POST's "notify" URLs may name
//	  - "*.example.com"         # the scheme's default port
//	  - host: ci.internal:8443
//	    allowAddresses: [10.1.2.3]  # internal addresses it may resolve to
//	notifySecret: "…"           # signs what goes to notify URLs
//	notifyEvents: [Succeeded, Failed, Cancelled]
type File struct {
	Sinks        []Sink  `json:"sinks"`
	AllowNotify  []Allow `json:"allowNotify"`
	NotifySecret string  `json:"notifySecret"`
	// NotifyEvents are the states sent to notify URLs; default the
	// final ones.
	NotifyEvents []string `json:"notifyEvents"`
	// InternalCIDRs are more ranges treated as internal (refused unless
	// named), such as a cluster's pod and service ranges when they lie
	// outside the private ones.
	InternalCIDRs []string `json:"internalCIDRs"`
}

// Sink is one configured receiver.
type Sink struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Events are the states sent; default the final ones.
	Events []string `json:"events"`
	Secret string   `json:"secret"`
	// AllowInsecure permits an http:// URL.
	AllowInsecure bool `json:"allowInsecure"`
	// AllowAddresses are internal addresses (IPs or CIDRs) the URL's host
	// may resolve to; an IP literal host is allowed by itself.
	AllowAddresses []string `json:"allowAddresses"`
}

// Allow is one host pattern of allowNotify: a string, or an object.
type Allow struct {
	// Host is name[:port]: "hooks.example.com", "*.example.com" (one or
	// more labels before .example.com), "ci.example.com:8443", "host:*"
	// (any port), an IP literal ("203.0.113.7", "[2001:db8::1]:8443").
	// Without a port, the scheme's default (443, or 80 for http).
	Host           string   `json:"host"`
	AllowInsecure  bool     `json:"allowInsecure"`
	AllowAddresses []string `json:"allowAddresses"`
}

// UnmarshalJSON takes a bare string as the host.
func (a *Allow) UnmarshalJSON(b []byte) error {
	var host string
	if err := json.Unmarshal(b, &host); err == nil {
		*a = Allow{Host: host}
		return nil
	}
	type plain Allow
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p plain
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*a = Allow(p)
	return nil
}

// MinSecretBytes is the shortest secret accepted: an HMAC key shorter than
// a few words is guessable.
const MinSecretBytes = 16

// maxFileBytes bounds the webhooks file.
const maxFileBytes = 1 << 20

// Config is a validated webhooks file.
type Config struct {
	Sinks        []*SinkTarget
	Notify       []*Pattern
	NotifySecret []byte
	notifyStates []string
	internal     []netip.Prefix
}

// SinkTarget is a validated sink.
type SinkTarget struct {
	Name   string
	URL    *url.URL
	Secret []byte
	states []string
	guard  guard
}

// Pattern is a validated allowNotify entry.
type Pattern struct {
	source   string // as written, for messages
	wildcard bool   // "*.": Host is the suffix, without the dot
	host     string // lower-case name or IP literal, without brackets
	port     string // "" for the scheme's default, "*" for any
	insecure bool
	guard    guard
}

// Load reads and validates the webhooks file at path.
func Load(path string) (*Config, error) {
	l, err := Open(path)
	if err != nil {
		return nil, err
	}
	return l.Current(), nil
}

// readFile reads the webhooks file at path, at most maxFileBytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("webhooks file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("webhooks file %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("webhooks file %s: over %d bytes", path, maxFileBytes)
	}
	return data, nil
}

// Parse validates a webhooks file's content; every problem is named.
func Parse(data []byte) (*Config, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("not a webhooks file (sinks, allowNotify, notifySecret, notifyEvents, internalCIDRs): %w", err)
	}
	return f.validate()
}

var sinkName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (f File) validate() (*Config, error) {
	var errs []error
	cfg := &Config{}
	for i, c := range f.InternalCIDRs {
		p, err := parsePrefix(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("internalCIDRs[%d]: %w", i, err))
			continue
		}
		cfg.internal = append(cfg.internal, p)
	}
	names := map[string]bool{}
	for i, s := range f.Sinks {
		where := fmt.Sprintf("sinks[%d]", i)
		if s.Name != "" {
			where += fmt.Sprintf(" (%s)", s.Name)
		}
		t, err := s.validate(cfg.internal)
		if err == nil && names[s.Name] {
			err = fmt.Errorf("name %q is used twice", s.Name)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		names[s.Name] = true
		cfg.Sinks = append(cfg.Sinks, t)
	}
	for i, a := range f.AllowNotify {
		p, err := a.validate(cfg.internal)
		if err != nil {
			errs = append(errs, fmt.Errorf("allowNotify[%d] %q: %w", i, a.Host, err))
			continue
		}
		cfg.Notify = append(cfg.Notify, p)
	}
	states, err := eventStates(f.NotifyEvents)
	if err != nil {
		errs = append(errs, fmt.Errorf("notifyEvents: %w", err))
	}
	cfg.notifyStates = states
	switch {
	case len(f.AllowNotify) > 0 && len(f.NotifySecret) < MinSecretBytes:
		errs = append(errs, fmt.Errorf("notifySecret: allowNotify needs a secret of at least %d bytes, to sign what goes to notify URLs", MinSecretBytes))
	case len(f.AllowNotify) == 0 && (f.NotifySecret != "" || len(f.NotifyEvents) > 0):
		errs = append(errs, errors.New("notifySecret and notifyEvents need allowNotify: without it no notify URL is accepted"))
	}
	cfg.NotifySecret = []byte(f.NotifySecret)
	if len(f.Sinks) == 0 && len(f.AllowNotify) == 0 {
		errs = append(errs, errors.New("neither sinks nor allowNotify: nothing to deliver to (leave --webhooks-file empty to turn webhooks off)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (s Sink) validate(internal []netip.Prefix) (*SinkTarget, error) {
	if !sinkName.MatchString(s.Name) {
		return nil, fmt.Errorf("name %q: want 1 to 63 lower-case letters, digits and '-' (it is shown in the experiment's status)", s.Name)
	}
	u, err := parseTargetURL(s.URL, s.AllowInsecure)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if len(s.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("secret: every sink needs one of at least %d bytes; receivers check the %s header with it", MinSecretBytes, "X-Gmini-Signature")
	}
	states, err := eventStates(s.Events)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	g, err := newGuard(u.Hostname(), s.AllowAddresses, internal)
	if err != nil {
		return nil, err
	}
	return &SinkTarget{Name: s.Name, URL: u, Secret: []byte(s.Secret), states: states, guard: g}, nil
}

// parseTargetURL checks a sink's or a notify URL: absolute, https (http
// only when insecure is allowed), a host, no credentials, no fragment.
func parseTargetURL(raw string, insecure bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return nil, errors.New("missing")
	case err != nil:
		return nil, fmt.Errorf("%q is not a URL", raw)
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("%q: want https:// (or http:// with allowInsecure)", raw)
	case u.Scheme == "http" && !insecure:
		return nil, fmt.Errorf("%q: http:// sends events and signatures in clear; use https://, or set allowInsecure: true", raw)
	case u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("%q carries credentials: receivers authenticate gmini by the signature instead", redactURL(u))
	case u.Fragment != "" || u.RawFragment != "":
		return nil, fmt.Errorf("%q has a fragment, which is never sent", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: port %q out of range", raw, p)
		}
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
		if err := alwaysRefused(ip.Unmap()); err != nil {
			return nil, fmt.Errorf("%q: %w", raw, err)
		}
	}
	return u, nil
}

func (a Allow) validate(internal []netip.Prefix) (*Pattern, error) {
	p := &Pattern{source: a.Host, insecure: a.AllowInsecure}
	host, port := a.Host, ""
	if h, pt, err := net.SplitHostPort(a.Host); err == nil {
		host, port = h, pt
		if port != "*" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("port %q: want 1 to 65535, or * for any", port)
			}
		}
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	p.port = port
	host = strings.ToLower(host)
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		p.wildcard, host = true, rest
	}
	p.host = host
	ip, ipErr := netip.ParseAddr(host)
	switch {
	case host == "":
		return nil, errors.New("no host")
	case ipErr == nil && p.wildcard:
		return nil, errors.New("a wildcard names DNS names, not addresses")
	case ipErr == nil:
		if err := alwaysRefused(ip.Unmap()); err != nil {
			return nil, err
		}
	case !validDNSName(host):
		return nil, errors.New(`want a DNS name ("hooks.example.com"), a wildcard ("*.example.com"), or an IP address, with an optional ":port"`)
	case p.wildcard && !strings.Contains(host, "."):
		return nil, errors.New(`a wildcard needs a domain of two labels or more ("*.example.com"), not a top-level domain`)
	}
	g, err := newGuard(host, a.AllowAddresses, internal)
	if err != nil {
		return nil, err
	}
	p.guard = g
	return p, nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func validDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !dnsLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// finalStates are what a sink gets unless it names its states.
var finalStates = []string{state.Succeeded, state.Failed, state.Cancelled}

// recordedStates are the states events can carry: a record's.
var recordedStates = []string{state.Submitted, state.Queued, state.Pending, state.Running, state.Succeeded, state.Failed, state.Cancelled, state.Suspended}

func eventStates(names []string) ([]string, error) {
	if len(names) == 0 {
		return finalStates, nil
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(recordedStates, n) {
			return nil, fmt.Errorf("%q is not a state an experiment is recorded in: %s", n, strings.Join(recordedStates, ", "))
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%q is named twice", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// Wants reports whether the sink gets events of state s.
func (s *SinkTarget) Wants(st string) bool { return slices.Contains(s.states, st) }

// NotifyWants reports whether notify URLs get events of state st.
func (c *Config) NotifyWants(st string) bool {
	return len(c.Notify) > 0 && slices.Contains(c.notifyStates, st)
}

// Sink returns the sink named name.
func (c *Config) Sink(name string) (*SinkTarget, bool) {
	for _, s := range c.Sinks {
		if s.Name == name {
			return s, true
		}
	}
	return nil, false
}

// String is the pattern as configured, and whether it admits http.
func (p *Pattern) String() string {
	if p.insecure {
		return p.source + " (http too)"
	}
	return p.source
}

// match reports whether u is admitted: its host, port and scheme.
func (p *Pattern) match(u *url.URL) bool {
	if u.Scheme == "http" && !p.insecure || u.Scheme != "http" && u.Scheme != "https" {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if p.wildcard {
		if !strings.HasSuffix(host, "."+p.host) {
			return false
		}
	} else if a, err := netip.ParseAddr(host); err == nil {
		b, err := netip.ParseAddr(p.host)
		if err != nil || a.Unmap() != b.Unmap() {
			return false
		}
	} else if host != p.host {
		return false
	}
	port := u.Port()
	if port == "" {
		port = defaultPort(u.Scheme)
	}
	switch p.port {
	case "*":
		return true
	case "":
		return port == defaultPort(u.Scheme)
	}
	return port == p.port
}

func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

// Match returns the allowNotify entry that admits the notify URL raw.
func (c *Config) Match(raw string) (*url.URL, *Pattern, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("notify URL is not a URL: %w", err)
	}
	for _, p := range c.Notify {
		if p.match(u) {
			return u, p, nil
		}
	}
	return u, nil, c.refusal(u)
}

// refusal says why no entry admits u, naming those that exist.
func (c *Config) refusal(u *url.URL) error {
	allowed := make([]string, 0, len(c.Notify))
	for _, p := range c.Notify {
		allowed = append(allowed, p.String())
	}
	host := u.Host
	if len(host) > 100 {
		host = host[:100] + "…"
	}
	return fmt.Errorf("%s://%s is not allowed for notify URLs; allowNotify admits %s", u.Scheme, host, strings.Join(allowed, ", "))
}

// Redact is the notify URL as the API shows it: without credentials,
// query or fragment, which may carry a token.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.ForceQuery, v.Fragment, v.RawFragment = nil, "", false, "", ""
	return v.String()
}

// String says what the config holds, for logs; never its secrets.
func (c *Config) String() string {
	return fmt.Sprintf("%d sinks, %d allowNotify patterns", len(c.Sinks), len(c.Notify))
}

// Admit checks a POST's notify URLs against allowNotify; the error, of
// kind Invalid, names the hosts allowed.
func (c *Config) Admit(urls []string) error {
	for i, raw := range urls {
		if _, _, err := c.Match(raw); err != nil {
			return failure.New(failure.Invalid, `"notify"[%d]: %v`, i, err)
		}
	}
	return nil
}
