package webhook

import (
	"net/http"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := DefaultBackoff
	tests := []struct {
		n        int
		min, max time.Duration // [min, max]: half fixed, half random
	}{
		{0, 500 * time.Millisecond, time.Second},
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{3, 2 * time.Second, 4 * time.Second},
		{10, 256 * time.Second, 512 * time.Second},
		{11, 5 * time.Minute, 10 * time.Minute}, // 1024 s is past the cap
		{50, 5 * time.Minute, 10 * time.Minute},
		{1000, 5 * time.Minute, 10 * time.Minute},
	}
	for _, tt := range tests {
		lo := b.Delay(tt.n, func(time.Duration) time.Duration { return 0 })
		hi := b.Delay(tt.n, func(d time.Duration) time.Duration { return d - 1 })
		if lo != tt.min || hi < tt.max-time.Nanosecond || hi > tt.max {
			t.Errorf("Delay(%d) in [%v, %v], want [%v, %v]", tt.n, lo, hi, tt.min, tt.max)
		}
		for range 100 {
			if d := b.Delay(tt.n, nil); d < tt.min || d > tt.max {
				t.Errorf("Delay(%d) = %v, outside [%v, %v]", tt.n, d, tt.min, tt.max)
			}
		}
	}
	// Over 24 hours, with the cap at 10 minutes: attempts go on all day.
	total, n := time.Duration(0), 0
	for total < DefaultMaxAge {
		n++
		total += b.Delay(n, func(d time.Duration) time.Duration { return d / 2 })
	}
	if n < 100 || n > 250 {
		t.Errorf("%d attempts fill 24 h; want on the order of 150", n)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"30", 30 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		h := http.Header{}
		if tt.v != "" {
			h.Set("Retry-After", tt.v)
		}
		if got := retryAfter(h, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}
