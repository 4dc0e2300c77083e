package experiment

import (
	"slices"
	"strings"
	"testing"
)

func TestDecodeNotify(t *testing.T) {
	long := "https://h.example/" + strings.Repeat("a", MaxNotifyURLBytes)
	for _, tt := range []struct {
		name, body string
		want       []string
		wantErr    string
	}{
		{name: "none", body: `{"experiment": {"id": "e1"}}`},
		{name: "one", body: `{"experiment": {"id": "e1"}, "notify": ["https://h.example/x?t=1"]}`, want: []string{"https://h.example/x?t=1"}},
		{name: "http is for the deployment to allow", body: `{"experiment": {"id": "e1"}, "notify": ["http://h.example/"]}`, want: []string{"http://h.example/"}},
		{name: "five", body: `{"experiment": {"id": "e1"}, "notify": ["https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/", "https://e.example/"]}`,
			want: []string{"https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/", "https://e.example/"}},
		{name: "six", body: `{"experiment": {"id": "e1"}, "notify": ["https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/", "https://e.example/", "https://f.example/"]}`,
			wantErr: "at most 5"},
		{name: "empty", body: `{"experiment": {"id": "e1"}, "notify": []}`, wantErr: `"notify" is empty`},
		{name: "a string", body: `{"experiment": {"id": "e1"}, "notify": "https://h.example/"}`, wantErr: `"notify" must be an array of URLs, got a string`},
		{name: "null", body: `{"experiment": {"id": "e1"}, "notify": null}`, wantErr: "got null"},
		{name: "a number inside", body: `{"experiment": {"id": "e1"}, "notify": [1]}`, wantErr: `"notify"[0] must be a string, got a number`},
		{name: "another scheme", body: `{"experiment": {"id": "e1"}, "notify": ["ftp://h.example/"]}`, wantErr: "want an https:// URL"},
		{name: "relative", body: `{"experiment": {"id": "e1"}, "notify": ["/hook"]}`, wantErr: "want an https:// URL"},
		{name: "no host", body: `{"experiment": {"id": "e1"}, "notify": ["https:///hook"]}`, wantErr: "no host"},
		{name: "credentials", body: `{"experiment": {"id": "e1"}, "notify": ["https://u:p@h.example/"]}`, wantErr: "carries credentials"},
		{name: "fragment", body: `{"experiment": {"id": "e1"}, "notify": ["https://h.example/#x"]}`, wantErr: "fragment"},
		{name: "too long", body: `{"experiment": {"id": "e1"}, "notify": ["` + long + `"]}`, wantErr: "at most 2048"},
		{name: "twice", body: `{"experiment": {"id": "e1"}, "notify": ["https://h.example/", "https://h.example/"]}`, wantErr: `"notify"[1] repeats`},
		{name: "not a URL", body: `{"experiment": {"id": "e1"}, "notify": ["https://h.example/%zz"]}`, wantErr: "not a URL"},
		{name: "inside the experiment it is the runner's", body: `{"experiment": {"id": "e1", "notify": 3}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(strings.NewReader(tt.body))
			if tt.wantErr != "" {
				if !isInputError(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode = %+v, %v; want an Invalid error saying %q", got.Notify, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "u:p@") {
					t.Errorf("error %q repeats the credentials", err)
				}
				return
			}
			if err != nil || !slices.Equal(got.Notify, tt.want) {
				t.Fatalf("Decode = notify %q, %v; want %q", got.Notify, err, tt.want)
			}
		})
	}
}

// The notify URLs say who is told, not what runs: the runner does not get
// them, and the hash ignores them.
func TestNotifyIsNotPartOfTheExperiment(t *testing.T) {
	a, err := Decode(strings.NewReader(`{"experiment": {"id": "e1", "k": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Decode(strings.NewReader(`{"notify": ["https://h.example/x"], "experiment": {"k": 1, "id": "e1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Body) != string(b.Body) || a.Hash != b.Hash || strings.Contains(string(b.Body), "h.example") {
		t.Errorf("notify changed the body or hash: %s %s vs %s %s", a.Body, a.Hash, b.Body, b.Hash)
	}
}
