// Package experiment decodes and validates the body of POST /experiment.
//
// The wire contract comes from the tutorial's frontend:
//
//	{"experiment": {"id": "<experiment id>", "key": "<key>", ...}}
//
// Extra fields inside "experiment" are passed on to the runner untouched.
// Beside it, an optional "queue" names the Kueue LocalQueue to wait in, and
// an optional "notify" lists URLs to send its state changes to (webhooks).
package experiment

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

const (
	// maxDepth bounds JSON nesting: deeper documents are rejected before they
	// cost memory, and no real experiment needs more.
	maxDepth = 32
	// MaxEncodedBytes bounds Body, which the runner gets as one process
	// argument: Linux's MAX_ARG_STRLEN is 32 pages (128 KiB) including the
	// terminating NUL.
	MaxEncodedBytes = 128<<10 - 1
)

// Experiment is a validated request.
type Experiment struct {
	// ID is experiment.id exactly as sent.
	ID string
	// Body is the request re-encoded compactly with sorted keys:
	// {"experiment":{...}}. It is what the runner receives, and two requests
	// with the same content have the same Body whatever their key order or
	// white space.
	Body []byte
	// Hash is the hex SHA-256 of Body, used to tell a retry of the same
	// experiment from a different experiment reusing an ID.
	Hash string
	// Queue is the body's "queue", the Kueue LocalQueue asked for; empty
	// for the default. It is not in Body: the runner does not get it, and
	// a retry naming another queue is the same experiment.
	Queue string
	// Notify are the body's "notify" URLs, to be told of the experiment's
	// state changes (package webhook); which hosts they may name is the
	// deployment's to say, and checked before the claim. Like Queue they
	// are not in Body: a retry naming other URLs is the same experiment,
	// and keeps the first submission's.
	Notify []string
	// Set is the experiment set it is submitted in (POST
	// /experiment-sets), empty for POST /experiment. Decode never sets
	// it: it is not part of the body, so the same experiment has the same
	// Hash in a set and alone.
	Set string
}

// inputErrorf is an error the client can fix: its message says what is
// wrong with the request.
func inputErrorf(format string, args ...any) error {
	return failure.New(failure.Invalid, format, args...)
}

// Decode reads one request body. Every error it returns is of kind
// failure.Invalid except errors from r itself (such as *http.MaxBytesError),
// which are returned wrapped so failure.KindOf classifies them.
func Decode(r io.Reader) (Experiment, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Experiment{}, fmt.Errorf("read body: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Experiment{}, inputErrorf(`empty body: send {"experiment": {"id": "..."}}`)
	}
	if !utf8.Valid(data) {
		return Experiment{}, inputErrorf("body is not valid UTF-8")
	}
	v, err := parseStrict(data)
	if err != nil {
		return Experiment{}, err
	}
	top, ok := v.(map[string]any)
	if !ok {
		return Experiment{}, inputErrorf(`body must be a JSON object: {"experiment": {"id": "..."}}`)
	}
	for k := range top {
		if k != "experiment" && k != "queue" && k != "notify" {
			return Experiment{}, inputErrorf(`unknown field %q: the body holds only "experiment", "queue" and "notify"`, k)
		}
	}
	queue, err := decodeQueue(top)
	if err != nil {
		return Experiment{}, err
	}
	notify, err := decodeNotify(top)
	if err != nil {
		return Experiment{}, err
	}
	rawExp, ok := top["experiment"]
	if !ok || rawExp == nil {
		return Experiment{}, inputErrorf(`"experiment" is missing: send {"experiment": {"id": "..."}}`)
	}
	exp, ok := rawExp.(map[string]any)
	if !ok {
		return Experiment{}, inputErrorf(`"experiment" must be a JSON object, got %s`, jsonKind(rawExp))
	}
	rawID, ok := exp["id"]
	if !ok {
		return Experiment{}, inputErrorf(`"experiment.id" is missing`)
	}
	id, ok := rawID.(string)
	if !ok {
		return Experiment{}, inputErrorf(`"experiment.id" must be a string, got %s`, jsonKind(rawID))
	}
	if err := ValidateID(id); err != nil {
		return Experiment{}, err
	}
	// Encoding a map sorts its keys, which makes Body canonical. HTML
	// escaping is off because it turns each of '<', '>' and '&' into six
	// bytes: a 64 KiB body of them would grow past what Linux accepts as
	// one argument, and the runner's pod could not start.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"experiment": exp}); err != nil {
		return Experiment{}, fmt.Errorf("encode experiment: %w", err)
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	// encoding/json still writes U+2028 and U+2029 as six-byte escapes,
	// so the body can double at most; a large body limit could still
	// pass the argument limit.
	if len(body) > MaxEncodedBytes {
		return Experiment{}, inputErrorf("the experiment re-encodes to %d bytes; the runner receives it as one argument, limited to %d bytes", len(body), MaxEncodedBytes)
	}
	sum := sha256.Sum256(body)
	return Experiment{ID: id, Body: body, Hash: hex.EncodeToString(sum[:]), Queue: queue, Notify: notify}, nil
}

// decodeQueue reads the optional top-level "queue": the name of a Kueue
// LocalQueue, which becomes a label value, so a DNS-1123 label.
func decodeQueue(top map[string]any) (string, error) {
	raw, ok := top["queue"]
	if !ok {
		return "", nil
	}
	q, ok := raw.(string)
	if !ok {
		return "", inputErrorf(`"queue" must be a string, got %s`, jsonKind(raw))
	}
	if err := ValidateQueue(q); err != nil {
		return "", err
	}
	return q, nil
}

// ValidateQueue checks that q can name a queue: a DNS-1123 label, as the
// names of Kueue's LocalQueues and label values allow.
func ValidateQueue(q string) error {
	if q == "" {
		return inputErrorf(`"queue" is empty: name a queue, or leave "queue" out for the default`)
	}
	if errs := validation.IsDNS1123Label(q); len(errs) > 0 {
		return inputErrorf(`"queue" %s is not a valid queue name: %s`, failure.Quote(q), strings.Join(errs, "; "))
	}
	return nil
}

// ValidateID checks that id can name an experiment (jobspec.ValidateID);
// its error is the client's to fix.
func ValidateID(id string) error {
	if err := jobspec.ValidateID(id); err != nil {
		return &failure.Error{Kind: failure.Invalid, Err: err}
	}
	return nil
}

// parseStrict decodes one JSON value, keeping numbers exact and rejecting
// what encoding/json silently accepts: duplicated keys (it keeps the last,
// so the runner and an auditor could disagree on the ID), trailing data and
// excessive nesting.
func parseStrict(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, inputErrorf("malformed JSON: unexpected data after the top-level value")
	}
	return v, nil
}

func parseValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, malformed(err)
	}
	switch tok {
	case json.Delim('{'):
		if depth >= maxDepth {
			return nil, inputErrorf("JSON is nested more than %d levels deep", maxDepth)
		}
		obj := map[string]any{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return nil, malformed(err)
			}
			key := keyTok.(string) // the decoder only yields strings as keys
			if _, dup := obj[key]; dup {
				return nil, inputErrorf("malformed JSON: duplicated key %q", key)
			}
			val, err := parseValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			obj[key] = val
		}
		if _, err := dec.Token(); err != nil { // closing '}'
			return nil, malformed(err)
		}
		return obj, nil
	case json.Delim('['):
		if depth >= maxDepth {
			return nil, inputErrorf("JSON is nested more than %d levels deep", maxDepth)
		}
		arr := []any{}
		for dec.More() {
			val, err := parseValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, val)
		}
		if _, err := dec.Token(); err != nil { // closing ']'
			return nil, malformed(err)
		}
		return arr, nil
	default:
		return tok, nil
	}
}

func malformed(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return inputErrorf("malformed JSON: unexpected end of input")
	}
	return inputErrorf("malformed JSON: %v", err)
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
