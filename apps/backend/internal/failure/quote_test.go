package failure

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuote(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 7000)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"short", "Running", `"Running"`},
		{"exactly the limit", strings.Repeat("b", MaxQuoted), `"` + strings.Repeat("b", MaxQuoted) + `"`},
		{"one over", strings.Repeat("b", MaxQuoted+1), `"` + strings.Repeat("b", MaxQuoted) + `"…`},
		{"7,000 characters", long, `"` + long[:MaxQuoted] + `"…`},
		{"cut inside a rune", strings.Repeat("x", MaxQuoted-1) + "é" + long, `"` + strings.Repeat("x", MaxQuoted-1) + `"…`},
		{"control characters escaped", "a\nb", `"a\nb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Quote(tt.in)
			if got != tt.want {
				t.Errorf("Quote = %s, want %s", got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Quote = %q is not valid UTF-8", got)
			}
		})
	}
}
