package jobspec

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// jobNameSeeds are pairs of IDs that differ only in what JobName lowers or
// replaces, so the fuzzer starts from the near-collisions that matter.
var jobNameSeeds = [][2]string{
	{"aB3dE9xQ2mNpL7", "ab3de9xq2mnpl7"},
	{"a.b", "a_b"}, {"a-b", "a--b"}, {"a..b", "a.b"}, {"e1", "E1"},
	{strings.Repeat("a", 128), strings.Repeat("a", 127)},
	{strings.Repeat("a", 128), strings.Repeat("A", 128)},
	{strings.Repeat("a", 47) + "b", strings.Repeat("a", 47) + "c"}, // same readable part once cut
	{"0", "9-"}, {"x_", "x."}, {"---a", "a"}, {"", "-"}, {"é", "\xff"}, {"a\x00b", "a b"},
}

// FuzzJobName checks the ID-to-name mapping for any input, valid ID or not:
// the name is a DNS-1123 label of at most 63 characters starting with
// "exp-", the same ID always gives the same name, and two different IDs
// never share one (a collision needs 50 bits of SHA-256 to match, which a
// fuzzer finding would be news). `make fuzz` runs it for a bounded number of
// inputs; without -fuzz, `go test` runs it once per seed.
func FuzzJobName(f *testing.F) {
	for _, p := range jobNameSeeds {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na := JobName(a)
		if errs := validation.IsDNS1123Label(na); len(errs) > 0 {
			t.Fatalf("JobName(%q) = %q is not a DNS-1123 label: %v", a, na, errs)
		}
		if len(na) > 63 || !strings.HasPrefix(na, "exp-") {
			t.Fatalf("JobName(%q) = %q: want exp-... of at most 63 characters", a, na)
		}
		if JobName(a) != na {
			t.Fatalf("JobName(%q) is not deterministic", a)
		}
		if ValidateID(a) == nil {
			// The readable part is the ID lower-cased with other
			// characters turned into '-'; people find their Job by it.
			first := strings.ToLower(a[:1])
			if !strings.HasPrefix(na, "exp-"+first) {
				t.Fatalf("JobName(%q) = %q does not start with the ID's first character", a, na)
			}
		}
		if a == b {
			return
		}
		if nb := JobName(b); na == nb {
			t.Fatalf("different IDs %q and %q share the Job name %q", a, b, na)
		}
	})
}
