package history

import (
	"encoding/base64"
	"encoding/binary"
	"time"
	"unicode/utf8"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// cursor is where a page ended: the last record's sort key. The next page
// starts strictly after it, so records added meanwhile (always newer, hence
// before the cursor) neither repeat nor shift what follows.
type cursor struct {
	CreatedAt time.Time
	ID        string
}

// tokenVersion leads every token, so a later format can tell old tokens
// apart instead of misreading them.
const tokenVersion = 1

// maxTokenLen bounds a token before decoding: IDs are at most 128
// characters, so anything much longer was not made here.
const maxTokenLen = 1024

// encode makes the opaque continue token: base64url of a version byte,
// the creation time in microseconds and the ID.
func (c cursor) encode() string {
	b := make([]byte, 0, 9+len(c.ID))
	b = append(b, tokenVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(c.CreatedAt.UnixMicro()))
	b = append(b, c.ID...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor reads a continue token, refusing anything encode did not
// make.
func decodeCursor(token string) (cursor, error) {
	bad := func() (cursor, error) {
		return cursor{}, failure.New(failure.Invalid,
			"continue token %s is not valid: pass the continue value of the previous page unchanged, or none to start from the newest", failure.Quote(token))
	}
	if len(token) > maxTokenLen {
		return bad()
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 10 || b[0] != tokenVersion {
		return bad()
	}
	micros := int64(binary.BigEndian.Uint64(b[1:9]))
	id := string(b[9:])
	// The year 10000 bounds what either database stores.
	if micros < 0 || micros > 253402300799999999 || !utf8.ValidString(id) {
		return bad()
	}
	return cursor{CreatedAt: time.UnixMicro(micros).UTC(), ID: id}, nil
}
