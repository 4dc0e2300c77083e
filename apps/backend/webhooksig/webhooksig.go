// Package webhooksig signs the webhooks gmini sends and lets a receiver
// verify them: that a request comes from a backend holding the shared
// secret, carries the body it was signed with, and is fresh.
//
// The header is
//
//	X-Gmini-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<ce-id>.<body>")>
//
// where ce-id is the request's CloudEvents id (header ce-id) and body the
// request's body, byte for byte. Every attempt is signed anew (t is the
// attempt's time); ce-id stays the same across attempts. A receiver
// recomputes the MAC, compares it in constant time, and refuses a t too
// far from its clock (a replayed request). A header may carry several v1
// values (one per secret, while secrets are rotated): one matching is
// enough.
package webhooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is the signature's header.
const Header = "X-Gmini-Signature"

// DefaultTolerance is how far from the receiver's clock a signature's time
// may be: attempts are signed when sent, so only clock skew and the
// request's own time in flight count.
const DefaultTolerance = 5 * time.Minute

// Sign returns the header value for the request with CloudEvents id id and
// body body, sent at t.
func Sign(secret []byte, t time.Time, id string, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, id, body))
}

func mac(secret []byte, ts, id string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrMalformed = errors.New("webhook signature: malformed header")
	ErrMismatch  = errors.New("webhook signature: no v1 signature matches")
	ErrStale     = errors.New("webhook signature: timestamp outside the tolerance")
)

// Verify checks header (the X-Gmini-Signature value) for the request with
// CloudEvents id id and body body: some v1 signature matches secret, and
// its time is within tolerance of now (DefaultTolerance when 0).
func Verify(secret []byte, header, id string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformed
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil {
				return ErrMalformed
			}
			sigs = append(sigs, b)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrMalformed
	}
	want := mac(secret, ts, id, body)
	matched := false
	for _, s := range sigs {
		matched = matched || hmac.Equal(s, want)
	}
	if !matched {
		return ErrMismatch
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s away from now", ErrStale, d.Round(time.Second))
	}
	return nil
}
