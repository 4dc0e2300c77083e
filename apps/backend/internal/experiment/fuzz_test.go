package experiment

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// `make fuzz` runs FuzzDecode here and FuzzJobName in jobspec for a bounded
// number of inputs (the Makefile says why a count and not a duration).
//
// Without -fuzz, `go test` runs each target once per seed below, so the
// seeds are checked on every unit test run.

// decodeSeeds are bodies that reach every branch of Decode: valid ones,
// each kind of rejection, and JSON that encoding/json treats leniently.
var decodeSeeds = []string{
	`{"experiment": {"id": "aB3dE9xQ2mNpL7", "key": "k-123"}}`,
	`{"experiment": {"z": [1, 2.50, -0e+3], "id": "e1", "a": {"b": null, "c": true}}}`,
	`{"experiment": {"id": "e1", "seed": 123456789012345678901234567890}}`,
	`{"experiment": {"id": "run_2024.01-a", "s": "\u00e9\ud83d\ude00\u0000<>&"}}`,
	`{"experiment": {"id": "` + strings.Repeat("a", jobspec.MaxIDLength) + `"}}`,
	`{"experiment": {"id": "` + strings.Repeat("a", jobspec.MaxIDLength+1) + `"}}`,
	``, " \n\t", `[]`, `null`, `"x"`, `1`, `{}`, `{"experiment": null}`,
	`{"experiment": []}`, `{"experiment": "e1"}`, `{"experiment": {}}`,
	`{"experiment": {"id": null}}`, `{"experiment": {"id": 7}}`, `{"experiment": {"id": ""}}`,
	`{"experiment": {"id": "a b"}}`, `{"experiment": {"id": "../etc"}}`, `{"experiment": {"id": "a/b"}}`,
	`{"experiment": {"id": "a\u0000b"}}`, `{"experiment": {"id": "é"}}`, `{"experiment": {"id": "-a"}}`,
	`{"experiment": {"id": "a", "id": "b"}}`, `{"experiment": {"id": "a"}, "experiment": {"id": "b"}}`,
	`{"experiment": {"id": "a"}, "x": 1}`, `{"experiment": {"id": "a"}} {}`, `{"experiment": {"id": "a"`,
	`{"experiment": {"id": "a"}}` + "\xff", "\xef\xbb\xbf" + `{"experiment": {"id": "a"}}`,
	`{"experiment": {"id": "a", "deep": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}`,
	`{"experiment": {"id": "a", "deep": ` + strings.Repeat(`{"k":`, 29) + `1` + strings.Repeat("}", 29) + `}}`,
	`{"experiment": {"id": "a", "n": 1e400}}`, `{"experiment": {"id": "a", "n": 01}}`,
	`{"experiment": {"id": "a", "\ud800": "lone surrogate"}}`,
	`{"experiment": {"id": "a", "html": "<script>&amp;</script>", "ls": "  "}}`,
}

// FuzzDecode checks that Decode never panics, that it rejects only with an
// Invalid error (the reader here cannot fail), and that what it accepts is
// canonical: a valid ID, a Hash that is the SHA-256 of Body, and a Body
// that decodes again to the same ID, Body and Hash (the runner and a retry
// see exactly what the backend hashed).
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		exp, err := Decode(bytes.NewReader(data))
		if err != nil {
			if !isInputError(err) {
				t.Fatalf("Decode(%q) failed with %T %v, want a *failure.Error of kind Invalid", data, err, err)
			}
			if err.Error() == "" {
				t.Fatalf("Decode(%q) gave an empty error message", data)
			}
			return
		}
		if err := ValidateID(exp.ID); err != nil {
			t.Fatalf("Decode(%q) accepted ID %q that ValidateID rejects: %v", data, exp.ID, err)
		}
		sum := sha256.Sum256(exp.Body)
		if exp.Hash != hex.EncodeToString(sum[:]) {
			t.Fatalf("Decode(%q): Hash %s is not the SHA-256 of Body %q", data, exp.Hash, exp.Body)
		}
		if len(exp.Body) > MaxEncodedBytes {
			t.Fatalf("Decode(%q): Body of %d bytes is over the runner's argument limit", data, len(exp.Body))
		}
		if len(exp.Body) > 2*len(data) {
			t.Fatalf("Decode(%q): Body grew from %d to %d bytes; only U+2028/U+2029 may double", data, len(data), len(exp.Body))
		}
		again, err := Decode(bytes.NewReader(exp.Body))
		if err != nil {
			t.Fatalf("Decode(%q) gave Body %q, which Decode rejects: %v", data, exp.Body, err)
		}
		if again.ID != exp.ID || again.Hash != exp.Hash || !bytes.Equal(again.Body, exp.Body) {
			t.Fatalf("Body is not canonical:\n input %q\n first  %q %s %q\n second %q %s %q",
				data, exp.ID, exp.Hash, exp.Body, again.ID, again.Hash, again.Body)
		}
	})
}

// TestDecodeBodyFitsOneArgument: the runner gets Body as one process
// argument, which Linux limits to 128 KiB. A body within the request limit
// must not grow past it when re-encoded (encoding/json's HTML escaping made
// 64 KiB of '<' into 384 KiB), and what would is refused as bad input.
func TestDecodeBodyFitsOneArgument(t *testing.T) {
	wrap := func(s string) string { return `{"experiment": {"id": "a", "s": "` + s + `"}}` }
	tests := []struct {
		name    string
		body    string
		wantErr bool
	}{
		{"64 KiB of '<'", wrap(strings.Repeat("<", 64<<10-40)), false},
		{"64 KiB of '&'", wrap(strings.Repeat("&", 64<<10-40)), false},
		{"64 KiB of U+2028", wrap(strings.Repeat("\u2028", (64<<10-40)/3)), false},
		{"100 KiB of U+2028", wrap(strings.Repeat("\u2028", (100<<10-40)/3)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, err := Decode(strings.NewReader(tt.body))
			if tt.wantErr {
				if !isInputError(err) || !strings.Contains(err.Error(), "one argument") {
					t.Fatalf("err = %v, want an Invalid error about the argument limit", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(exp.Body) > MaxEncodedBytes {
				t.Errorf("a %d-byte body re-encodes to %d bytes, over %d", len(tt.body), len(exp.Body), MaxEncodedBytes)
			}
		})
	}
}
