package sets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// MaxItems bounds the items of one set.
const MaxItems = wire.MaxSetItems

// Request is a decoded POST /experiment-sets: the set's ID and every item,
// valid or not, in request order.
type Request struct {
	ID    string
	Items []Item
}

// Item is one item of a set.
type Item struct {
	Index int
	// ID is the item's experiment ID, when it has a valid one (also when
	// the item is invalid otherwise), for the answer.
	ID string
	// Exp is the decoded experiment, its Set the request's; valid only
	// when Err is nil.
	Exp experiment.Experiment
	// Err says why the item is refused without being submitted: what
	// POST /experiment would answer for it alone.
	Err error
}

// Decode reads a set: {"id": "<set id>", "items": [<item>, ...]}. The set
// itself must be well-formed (a JSON object with exactly those two keys,
// once each, a valid set ID, 1 to MaxItems items, no experiment ID twice);
// otherwise Decode fails as Invalid, and nothing of the set is to be
// submitted. Each item is then judged alone by experiment.Decode, the
// single POST's own decoder, and an item over maxItemBytes (the single
// POST's body limit) is TooLarge: a bad item is refused in its Item.Err,
// beside the others.
//
// Errors from r itself (such as *http.MaxBytesError) are returned wrapped,
// so failure.KindOf classifies them.
func Decode(r io.Reader, maxItemBytes int64) (Request, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Request{}, fmt.Errorf("read the set: %w", err)
	}
	id, raws, err := parseSet(data)
	if err != nil {
		return Request{}, err
	}
	if err := jobspec.ValidateSetID(id); err != nil {
		return Request{}, &failure.Error{Kind: failure.Invalid, Err: err}
	}
	req := Request{ID: id, Items: make([]Item, len(raws))}
	for i, raw := range raws {
		req.Items[i] = decodeItem(i, raw, id, maxItemBytes)
		raws[i] = nil // the decoded item holds what is needed
	}
	if err := duplicates(req.Items); err != nil {
		return Request{}, err
	}
	return req, nil
}

func decodeItem(i int, raw []byte, set string, maxBytes int64) Item {
	item := Item{Index: i}
	if maxBytes > 0 && int64(len(raw)) > maxBytes {
		item.ID = idOf(raw)
		item.Err = failure.New(failure.TooLarge, "item %d is %d bytes; the limit of one experiment is %d", i, len(raw), maxBytes)
		return item
	}
	exp, err := experiment.Decode(bytes.NewReader(raw))
	if err != nil {
		item.ID = idOf(raw)
		item.Err = err
		return item
	}
	exp.Set = set
	item.ID, item.Exp = exp.ID, exp
	return item
}

// idOf is the experiment ID of an item that did not decode, when it has a
// valid one: the answer can then name the item by it.
func idOf(raw []byte) string {
	var v struct {
		Experiment struct {
			ID string `json:"id"`
		} `json:"experiment"`
	}
	if json.Unmarshal(raw, &v) != nil || experiment.ValidateID(v.Experiment.ID) != nil {
		return ""
	}
	return v.Experiment.ID
}

// parseSet reads the set's envelope strictly, as experiment.Decode reads
// a single body: duplicated or unknown keys and trailing data are refused.
// The items are kept raw, for experiment.Decode.
func parseSet(data []byte) (string, []json.RawMessage, error) {
	const shape = `send {"id": "<set id>", "items": [{"experiment": {"id": "..."}}, ...]}`
	if len(bytes.TrimSpace(data)) == 0 {
		return "", nil, failure.New(failure.Invalid, "empty body: %s", shape)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil {
		return "", nil, malformed(err)
	} else if tok != json.Delim('{') {
		return "", nil, failure.New(failure.Invalid, "body must be a JSON object: %s", shape)
	}
	var id string
	var items []json.RawMessage
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", nil, malformed(err)
		}
		key := tok.(string) // the decoder only yields strings as keys
		if seen[key] {
			return "", nil, failure.New(failure.Invalid, "malformed JSON: duplicated key %s", failure.Quote(key))
		}
		seen[key] = true
		switch key {
		case "id":
			tok, err := dec.Token()
			if err != nil {
				return "", nil, malformed(err)
			}
			s, ok := tok.(string)
			if !ok {
				return "", nil, failure.New(failure.Invalid, `the set "id" must be a string`)
			}
			id = s
		case "items":
			if items, err = parseItems(dec); err != nil {
				return "", nil, err
			}
		default:
			return "", nil, failure.New(failure.Invalid, `unknown field %s: a set holds only "id" and "items"`, failure.Quote(key))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return "", nil, malformed(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", nil, failure.New(failure.Invalid, "malformed JSON: unexpected data after the set")
	}
	switch {
	case !seen["id"]:
		return "", nil, failure.New(failure.Invalid, `the set "id" is missing: %s`, shape)
	case len(items) == 0:
		return "", nil, failure.New(failure.Invalid, `the set has no "items": %s`, shape)
	}
	return id, items, nil
}

// parseItems reads the items array, refusing it as soon as it holds more
// than MaxItems: the rest is not even read.
func parseItems(dec *json.Decoder) ([]json.RawMessage, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, malformed(err)
	}
	if tok != json.Delim('[') {
		return nil, failure.New(failure.Invalid, `"items" must be an array of experiments as POST /experiment takes them`)
	}
	var items []json.RawMessage
	for dec.More() {
		if len(items) == MaxItems {
			return nil, failure.New(failure.Invalid, "the set has more than %d items; split it into sets of at most %d", MaxItems, MaxItems)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, malformed(fmt.Errorf("item %d: %w", len(items), err))
		}
		items = append(items, raw)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, malformed(err)
	}
	return items, nil
}

func malformed(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return failure.New(failure.Invalid, "malformed JSON: unexpected end of input")
	}
	return failure.New(failure.Invalid, "malformed JSON: %v", err)
}

// maxNamedDuplicates bounds how many duplicated IDs a message lists.
const maxNamedDuplicates = 10

// duplicates refuses a set that names one experiment twice: the two items
// would race for one Job, and the answer could not say which item won.
func duplicates(items []Item) error {
	first := map[string][]int{}
	var dups []string
	for _, it := range items {
		if it.Err != nil {
			continue
		}
		idx := first[it.ID]
		if len(idx) == 1 {
			dups = append(dups, it.ID)
		}
		first[it.ID] = append(idx, it.Index)
	}
	if len(dups) == 0 {
		return nil
	}
	var named []string
	for _, id := range dups[:min(len(dups), maxNamedDuplicates)] {
		named = append(named, fmt.Sprintf("%q (items %s)", id, joinInts(first[id])))
	}
	more := ""
	if len(dups) > len(named) {
		more = fmt.Sprintf(" and %d more", len(dups)-len(named))
	}
	return failure.New(failure.Invalid, "experiment IDs appear more than once in the set: %s%s; nothing was submitted", strings.Join(named, ", "), more)
}

// joinInts lists the first few of v.
func joinInts(v []int) string {
	const most = 5
	s := make([]string, 0, most+1)
	for _, n := range v[:min(len(v), most)] {
		s = append(s, fmt.Sprint(n))
	}
	if len(v) > most {
		s = append(s, "...")
	}
	return strings.Join(s, ", ")
}
