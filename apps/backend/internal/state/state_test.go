package state

import "testing"

func TestVocabulary(t *testing.T) {
	for _, tt := range []struct {
		s            string
		known, final bool
	}{
		{Submitted, true, false}, {Queued, true, false}, {Pending, true, false}, {Running, true, false},
		{Succeeded, true, true}, {Failed, true, true}, {Cancelled, true, true},
		{Suspended, true, false}, {Deleting, true, false},
		{"", false, false}, {"succeeded", false, false}, {"Sleeping", false, false},
	} {
		if got := Known(tt.s); got != tt.known {
			t.Errorf("Known(%q) = %v, want %v", tt.s, got, tt.known)
		}
		if got := Final(tt.s); got != tt.final {
			t.Errorf("Final(%q) = %v, want %v", tt.s, got, tt.final)
		}
	}
	a := All()
	a[0] = "changed"
	if All()[0] != Submitted {
		t.Error("All returns the package's own slice")
	}
}
