package webhook

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Backoff spaces a delivery's attempts: the pause after the n-th failed
// attempt is Base·2^(n-1), at most Cap, of which half is fixed and half
// random ("equal jitter"), so deliveries that failed together (a receiver
// that was down) do not come back together.
type Backoff struct {
	Base, Cap time.Duration
}

// DefaultBackoff: 1 s doubling to 10 minutes; with MaxAge's 24 hours,
// about 150 attempts before a delivery is given up.
var DefaultBackoff = Backoff{Base: time.Second, Cap: 10 * time.Minute}

// Delay is the pause after the n-th failed attempt (n ≥ 1); rnd(d) is a
// random duration in [0, d) (nil: math/rand).
func (b Backoff) Delay(n int, rnd func(time.Duration) time.Duration) time.Duration {
	if rnd == nil {
		rnd = func(d time.Duration) time.Duration { return rand.N(d) }
	}
	d := b.Cap
	if n < 1 {
		n = 1
	}
	// Doubling from Base passes Cap long before it could overflow.
	if n <= 40 {
		if v := b.Base << (n - 1); v > 0 && v < b.Cap {
			d = v
		}
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rnd(d-half)
}

// retryAfter reads a Retry-After header (seconds or an HTTP date) at now;
// 0 when absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
