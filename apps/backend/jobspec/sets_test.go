package jobspec

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Every valid set ID is a label value, so SetSelector parses and selects
// exactly the set's Jobs; the invalid ones are refused with a reason.
func TestValidateSetID(t *testing.T) {
	for _, id := range []string{"a", "7", "Sweep_2.b-1", "lr.0.1", strings.Repeat("s", 63)} {
		if err := ValidateSetID(id); err != nil {
			t.Errorf("ValidateSetID(%q) = %v, want nil", id, err)
		}
		if errs := validation.IsValidLabelValue(id); len(errs) > 0 {
			t.Errorf("%q is accepted but is no label value: %v", id, errs)
		}
		sel, err := labels.Parse(SetSelector(id))
		if err != nil {
			t.Fatalf("SetSelector(%q) = %q: %v", id, SetSelector(id), err)
		}
		in := labels.Set{LabelManagedBy: LabelManagedByName, LabelSet: id}
		other := labels.Set{LabelManagedBy: LabelManagedByName, LabelSet: id + "x"}
		if !sel.Matches(in) || sel.Matches(other) || sel.Matches(labels.Set{LabelSet: id}) {
			t.Errorf("SetSelector(%q) does not select exactly gmini's Jobs of the set", id)
		}
	}
	for id, says := range map[string]string{
		"":                      "empty",
		strings.Repeat("s", 64): "64 characters long; the limit is 63",
		"-a":                    "must start and end",
		"a_":                    "must start and end",
		"a b":                   "character ' ' at byte 1",
		"a,b":                   "character ','",
		"a=b":                   "character '='",
		"é":                     "must start and end",
		"aé1":                   "character 'é' at byte 1",
	} {
		if err := ValidateSetID(id); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("ValidateSetID(%q) = %v, want an error saying %q", id, err, says)
		}
	}
}
