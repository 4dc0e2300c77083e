package main

import (
	"math"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestSpearman(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		x, y []float64
		want float64
	}{
		{"same order", []float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1},
		{"reversed", []float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		// d² = 1+1+0+0 → 1 - 6·2/(4·15) = 0.8
		{"one swap", []float64{1, 2, 3, 4}, []float64{2, 1, 3, 4}, 0.8},
		// ties take their mean rank: x ranks 1.5 1.5 3, y 1 2 3 → ρ = √3/2
		{"ties", []float64{1, 1, 2}, []float64{1, 2, 3}, math.Sqrt(3) / 2},
	}
	for _, c := range cases {
		if got := spearman(c.x, c.y); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: spearman = %v, want %v", c.name, got, c.want)
		}
	}
	if got := spearman([]float64{1, 1}, []float64{1, 2}); !math.IsNaN(got) {
		t.Errorf("constant x: %v, want NaN", got)
	}
}

func TestWarningsSince(t *testing.T) {
	t.Parallel()
	before := map[types.UID]warning{"a": {"FailedCreate", 5}, "b": {"BackoffLimitExceeded", 1}}
	after := map[types.UID]warning{"a": {"FailedCreate", 9}, "b": {"BackoffLimitExceeded", 1}, "c": {"FailedCreate", 2}, "d": {"Other", 1}}
	total, reasons := warningsSince(before, after)
	if total != 7 || reasons["FailedCreate"] != 6 || reasons["Other"] != 1 || len(reasons) != 2 {
		t.Errorf("warningsSince = %d %v, want 7 {FailedCreate 6, Other 1}", total, reasons)
	}
	if got := warningsText(total, reasons); got != "7 (FailedCreate 6, Other 1)" {
		t.Errorf("warningsText = %q", got)
	}
}

func TestParseOnly(t *testing.T) {
	t.Parallel()
	p, err := parseOnly("sets, queue")
	if err != nil || len(p) != 2 || !p[partSets] || !p[partQueue] {
		t.Errorf("parseOnly(sets, queue) = %v, %v", p, err)
	}
	if p, err := parseOnly("all"); err != nil || len(p) != 5 {
		t.Errorf("parseOnly(all) = %v, %v", p, err)
	}
	for _, bad := range []string{"", "spawn,lists", ","} {
		if _, err := parseOnly(bad); err == nil {
			t.Errorf("parseOnly(%q) accepted", bad)
		}
	}
}
