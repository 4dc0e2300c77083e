// Package experiment decodes and validates the body of POST /experiment and
// maps an experiment ID onto the name of the Job that runs it.
//
// The wire contract comes from the tutorial's frontend:
//
//	{"experiment": {"id": "<experiment id>", "key": "<key>", ...}}
//
// Extra fields inside "experiment" are passed on to the runner untouched.
package experiment

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

const (
	// MaxIDLength bounds experiment IDs. IDs come from a document store; 128
	// leaves room for any store's keys while keeping annotations small.
	MaxIDLength = 128
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
}

// InputError is an error the client can fix: its message says what is wrong
// with the request.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &InputError{msg: fmt.Sprintf(format, args...)}
}

// IsInputError reports whether err was caused by the request's content.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// Decode reads one request body. Every error it returns is an *InputError
// except errors from r itself (such as *http.MaxBytesError), which are
// returned wrapped so the caller can map them.
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
		if k != "experiment" {
			return Experiment{}, inputErrorf(`unknown field %q: the body holds only "experiment"`, k)
		}
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
	return Experiment{ID: id, Body: body, Hash: hex.EncodeToString(sum[:])}, nil
}

// ValidateID checks that id can name an experiment: 1 to MaxIDLength
// characters from [A-Za-z0-9._-], starting with a letter or digit. Mixed case
// is allowed: IDs come from a document store that generates them so.
func ValidateID(id string) error {
	switch {
	case id == "":
		return inputErrorf(`"experiment.id" is empty`)
	case len(id) > MaxIDLength:
		return inputErrorf(`"experiment.id" is %d characters long; the limit is %d`, len(id), MaxIDLength)
	case !isAlnum(id[0]):
		return inputErrorf(`"experiment.id" %q must start with a letter or a digit`, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			r, _ := utf8.DecodeRuneInString(id[i:])
			return inputErrorf(`"experiment.id" has the character %q at byte %d; allowed are letters, digits, '.', '_' and '-'`, r, i)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
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

// jobNamePrefix and hashLen shape Job names: "exp-" + readable part + "-" +
// hash. A Job's name is copied into a label, so it must be at most 63
// characters.
const (
	jobNamePrefix = "exp-"
	maxJobName    = 63
	hashLen       = 10
)

// JobName maps an experiment ID onto a DNS-1123 label of at most 63
// characters. The readable part is the ID lower-cased with other characters
// turned into '-', so people can recognise their Job; the suffix is a hash of
// the exact ID, so IDs that differ only in case or punctuation
// ("aB3" and "ab3", "a.b" and "a_b") still get different names. Two IDs share
// a name only if 50 bits of SHA-256 collide; the backend still checks the ID
// annotation of an existing Job before treating it as the same experiment.
func JobName(id string) string {
	sum := sha256.Sum256([]byte(id))
	suffix := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:hashLen]

	var b strings.Builder
	dash := true // no leading '-' and no runs of '-'
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			c = '-'
		}
		if c == '-' && dash {
			continue
		}
		dash = c == '-'
		b.WriteByte(c)
	}
	readable := b.String()
	if room := maxJobName - len(jobNamePrefix) - 1 - hashLen; len(readable) > room {
		readable = readable[:room]
	}
	readable = strings.TrimRight(readable, "-")
	if readable == "" {
		return jobNamePrefix + suffix
	}
	return jobNamePrefix + readable + "-" + suffix
}
