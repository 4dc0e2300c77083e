package main

import (
	"slices"
	"testing"
	"time"
)

func TestStepTimes(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	stages := []string{"a", "b", "c"}
	cases := []struct {
		name string
		seen map[string]time.Time
		want []time.Duration
	}{
		{"each from the one before", map[string]time.Time{"a": at(10), "b": at(30), "c": at(100)},
			[]time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 70 * time.Millisecond}},
		{"a stage not seen is skipped, the next counts from the last seen", map[string]time.Time{"a": at(10), "c": at(100)},
			[]time.Duration{10 * time.Millisecond, -1, 90 * time.Millisecond}},
		{"seen out of order by another watch: 0", map[string]time.Time{"a": at(50), "b": at(40), "c": at(60)},
			[]time.Duration{50 * time.Millisecond, 0, 10 * time.Millisecond}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := stepTimes(t0, stages, c.seen); !slices.Equal(got, c.want) {
				t.Errorf("stepTimes = %v, want %v", got, c.want)
			}
		})
	}
}
