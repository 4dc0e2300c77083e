package webhooksig_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/webhooksig"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"seq":42,"experiment":"e1","state":"Succeeded"}`)
	good := webhooksig.Sign(secret, now, "42", body)
	tests := []struct {
		name    string
		secret  []byte
		header  string
		id      string
		body    []byte
		now     time.Time
		wantErr error
	}{
		{name: "valid", secret: secret, header: good, id: "42", body: body, now: now},
		{name: "valid within the tolerance", secret: secret, header: good, id: "42", body: body, now: now.Add(4 * time.Minute)},
		{name: "another v1 beside the right one", secret: secret, header: "t=1800000000,v1=00ff," + good[len("t=1800000000,"):], id: "42", body: body, now: now},
		{name: "spaces after commas", secret: secret, header: "t=1800000000, " + good[len("t=1800000000,"):], id: "42", body: body, now: now},
		{name: "wrong secret", secret: []byte("fedcba9876543210"), header: good, id: "42", body: body, now: now, wantErr: webhooksig.ErrMismatch},
		{name: "body changed", secret: secret, header: good, id: "42", body: []byte(`{"seq":42,"experiment":"e1","state":"Failed"}`), now: now, wantErr: webhooksig.ErrMismatch},
		{name: "another event's id", secret: secret, header: good, id: "43", body: body, now: now, wantErr: webhooksig.ErrMismatch},
		{name: "time changed", secret: secret, header: "t=1800000001" + good[len("t=1800000000"):], id: "42", body: body, now: now, wantErr: webhooksig.ErrMismatch},
		{name: "replayed later", secret: secret, header: good, id: "42", body: body, now: now.Add(10 * time.Minute), wantErr: webhooksig.ErrStale},
		{name: "from the future", secret: secret, header: good, id: "42", body: body, now: now.Add(-10 * time.Minute), wantErr: webhooksig.ErrStale},
		{name: "no v1", secret: secret, header: "t=1800000000", id: "42", body: body, now: now, wantErr: webhooksig.ErrMalformed},
		{name: "no t", secret: secret, header: good[len("t=1800000000,"):], id: "42", body: body, now: now, wantErr: webhooksig.ErrMalformed},
		{name: "not hex", secret: secret, header: "t=1800000000,v1=zz", id: "42", body: body, now: now, wantErr: webhooksig.ErrMalformed},
		{name: "empty", secret: secret, header: "", id: "42", body: body, now: now, wantErr: webhooksig.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := webhooksig.Verify(tt.secret, tt.header, tt.id, tt.body, tt.now, 0)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Verify = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestSignFormat pins the header, which receivers implement: the value is
// what `printf '1700000000.7.{}' | openssl dgst -sha256 -hmac secret-secret-secret`
// prints.
func TestSignFormat(t *testing.T) {
	t.Parallel()
	got := webhooksig.Sign([]byte("secret-secret-secret"), time.Unix(1700000000, 0), "7", []byte("{}"))
	const want = "t=1700000000,v1=ce7c05c96d2e80a48192910a598abc5f7987cb82ca3ae87400f0166fcf112ab4"
	if got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}
