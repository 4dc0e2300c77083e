package experiment

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// isInputError reports whether err is the client's to fix.
func isInputError(err error) bool {
	var f *failure.Error
	return errors.As(err, &f) && f.Kind == failure.Invalid
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantID   string
		wantBody string
		wantErr  string // substring of the Invalid error; "" means success
	}{
		{name: "tutorial body", body: `{"experiment": {"id": "aB3dE9xQ2mNpL7", "key": "k1"}}`, wantID: "aB3dE9xQ2mNpL7", wantBody: `{"experiment":{"id":"aB3dE9xQ2mNpL7","key":"k1"}}`},
		{name: "extra fields kept, keys sorted", body: `{"experiment": {"z": [1, 2.50], "id": "e1", "a": {"b": null}}}`, wantID: "e1", wantBody: `{"experiment":{"a":{"b":null},"id":"e1","z":[1,2.50]}}`},
		{name: "big numbers stay exact", body: `{"experiment": {"id": "e1", "seed": 123456789012345678901234567890}}`, wantID: "e1", wantBody: `{"experiment":{"id":"e1","seed":123456789012345678901234567890}}`},
		{name: "dots, dashes and underscores", body: `{"experiment": {"id": "run_2024.01-a"}}`, wantID: "run_2024.01-a", wantBody: `{"experiment":{"id":"run_2024.01-a"}}`},
		{name: "128 characters", body: `{"experiment": {"id": "` + strings.Repeat("a", 128) + `"}}`, wantID: strings.Repeat("a", 128), wantBody: `{"experiment":{"id":"` + strings.Repeat("a", 128) + `"}}`},
		{name: "empty", body: ``, wantErr: "empty body"},
		{name: "white space only", body: " \n\t", wantErr: "empty body"},
		{name: "not json", body: `experiment=e1`, wantErr: "malformed JSON"},
		{name: "truncated", body: `{"experiment": {"id": "e1"`, wantErr: "unexpected end"},
		{name: "trailing data", body: `{"experiment": {"id": "e1"}} {}`, wantErr: "after the top-level value"},
		{name: "array", body: `[{"experiment": {"id": "e1"}}]`, wantErr: "must be a JSON object"},
		{name: "string", body: `"e1"`, wantErr: "must be a JSON object"},
		{name: "null", body: `null`, wantErr: "must be a JSON object"},
		{name: "unknown top-level field", body: `{"experiment": {"id": "e1"}, "exp": 1}`, wantErr: `unknown field "exp"`},
		{name: "experiment missing", body: `{}`, wantErr: `"experiment" is missing`},
		{name: "experiment null", body: `{"experiment": null}`, wantErr: `"experiment" is missing`},
		{name: "experiment string", body: `{"experiment": "e1"}`, wantErr: "must be a JSON object, got a string"},
		{name: "experiment array", body: `{"experiment": []}`, wantErr: "must be a JSON object, got an array"},
		{name: "id missing", body: `{"experiment": {"key": "k"}}`, wantErr: `"experiment.id" is missing`},
		{name: "id null", body: `{"experiment": {"id": null}}`, wantErr: "must be a string, got null"},
		{name: "id number", body: `{"experiment": {"id": 7}}`, wantErr: "must be a string, got a number"},
		{name: "id bool", body: `{"experiment": {"id": true}}`, wantErr: "must be a string, got a boolean"},
		{name: "id empty", body: `{"experiment": {"id": ""}}`, wantErr: "is empty"},
		{name: "id with space", body: `{"experiment": {"id": "a b"}}`, wantErr: "' '"},
		{name: "id with slash", body: `{"experiment": {"id": "../etc"}}`, wantErr: "must start with a letter"},
		{name: "id with inner slash", body: `{"experiment": {"id": "a/b"}}`, wantErr: "'/'"},
		{name: "id with null byte", body: `{"experiment": {"id": "a\u0000b"}}`, wantErr: `'\x00'`},
		{name: "id unicode", body: `{"experiment": {"id": "expé"}}`, wantErr: "'é'"},
		{name: "id 129 characters", body: `{"experiment": {"id": "` + strings.Repeat("a", 129) + `"}}`, wantErr: "129 characters"},
		{name: "duplicated id", body: `{"experiment": {"id": "a", "id": "b"}}`, wantErr: `duplicated key "id"`},
		{name: "duplicated experiment", body: `{"experiment": {"id": "a"}, "experiment": {"id": "b"}}`, wantErr: `duplicated key "experiment"`},
		{name: "deeply nested", body: `{"experiment": {"id": "e1", "x": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}`, wantErr: "nested more than"},
		{name: "invalid utf-8", body: "{\"experiment\": {\"id\": \"e1\", \"k\": \"\xff\"}}", wantErr: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(strings.NewReader(tt.body))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Decode succeeded with ID %q, want error containing %q", got.ID, tt.wantErr)
				}
				if !isInputError(err) {
					t.Errorf("error %v is not of kind Invalid", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.ID != tt.wantID {
				t.Errorf("ID = %q, want %q", got.ID, tt.wantID)
			}
			if string(got.Body) != tt.wantBody {
				t.Errorf("Body = %s, want %s", got.Body, tt.wantBody)
			}
			if len(got.Hash) != 64 {
				t.Errorf("Hash = %q, want 64 hex characters", got.Hash)
			}
		})
	}
}

func TestDecodeSameContentSameHash(t *testing.T) {
	a, err := Decode(strings.NewReader(`{"experiment": {"id": "e1", "key": "k", "n": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Decode(strings.NewReader("{\n \"experiment\":{\"n\":1,\"key\":\"k\",\"id\":\"e1\"}}"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(strings.NewReader(`{"experiment": {"id": "e1", "key": "other", "n": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash != b.Hash {
		t.Errorf("same experiment in another key order hashes differently: %s vs %s", a.Body, b.Body)
	}
	if a.Hash == c.Hash {
		t.Errorf("different experiments hash the same")
	}
}

func TestDecodeReaderError(t *testing.T) {
	rec := httptest.NewRecorder()
	body := http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(`{"experiment": {"id": "`+strings.Repeat("a", 100)+`"}}`)), 10)
	_, err := Decode(body)
	var maxErr *http.MaxBytesError
	if !errors.As(err, &maxErr) {
		t.Fatalf("error = %v, want a wrapped *http.MaxBytesError", err)
	}
	if isInputError(err) {
		t.Errorf("a reader error must not be reported as the client's input error")
	}
	if got := failure.KindOf(err); got != failure.TooLarge {
		t.Errorf("KindOf = %q, want %q", got, failure.TooLarge)
	}
}
