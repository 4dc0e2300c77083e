//go:build e2e

package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// badRequest is one malformed request and the answer docs/architecture.md
// promises for it. They are sent raw: the Go client sends only JSON it
// encoded itself, as application/json, to the routes and methods of the
// API.
type badRequest struct {
	name        string
	method      string // default POST
	path        string // default /experiment
	contentType string // sent as is; "" sends no Content-Type
	body        string
	chunked     bool // send without Content-Length
	want        int
	wantMsg     string // substring of the JSON error message
}

const jsonCT = "application/json"

func idBody(idJSON string) string { return `{"experiment": {"id": ` + idJSON + `, "key": "k"}}` }

func badRequests() []badRequest {
	valid := idBody(`"fine-id"`)
	pad := func(n int) string { return `{"experiment": {"id": "big", "pad": "` + strings.Repeat("x", n) + `"}}` }
	return []badRequest{
		// Wrong method or route.
		{name: "GET /experiment", method: http.MethodGet, want: 405, wantMsg: "not allowed"},
		{name: "PUT /experiment", method: http.MethodPut, contentType: jsonCT, body: valid, want: 405, wantMsg: "not allowed"},
		{name: "PATCH /experiment", method: http.MethodPatch, contentType: jsonCT, body: valid, want: 405, wantMsg: "not allowed"},
		{name: "DELETE /experiment", method: http.MethodDelete, want: 405, wantMsg: "not allowed"},
		{name: "POST /experiments (the list)", path: "/experiments", contentType: jsonCT, body: valid, want: 405, wantMsg: "not allowed"},
		{name: "POST /experiments/{id}", path: "/experiments/fine-id", contentType: jsonCT, body: valid, want: 405, wantMsg: "not allowed"},
		{name: "POST to an unknown route", path: "/experiment/run", contentType: jsonCT, body: valid, want: 404, wantMsg: "no such route"},
		// Wrong content type.
		{name: "no Content-Type", body: valid, want: 415, wantMsg: "Content-Type"},
		{name: "text/plain", contentType: "text/plain", body: valid, want: 415, wantMsg: "Content-Type"},
		{name: "form encoded", contentType: "application/x-www-form-urlencoded", body: "experiment=fine-id", want: 415, wantMsg: "Content-Type"},
		{name: "json-patch", contentType: "application/json-patch+json", body: valid, want: 415, wantMsg: "Content-Type"},
		{name: "unparsable Content-Type", contentType: "application/json; charset", body: valid, want: 415, wantMsg: "Content-Type"},
		// Not the right JSON.
		{name: "empty body", contentType: jsonCT, want: 400, wantMsg: "empty body"},
		{name: "white space only", contentType: jsonCT, body: " \r\n\t ", want: 400, wantMsg: "empty body"},
		{name: "truncated JSON", contentType: jsonCT, body: `{"experiment": {"id": "fine-id", "ke`, want: 400, wantMsg: "malformed JSON"},
		{name: "not JSON", contentType: jsonCT, body: `experiment=fine-id`, want: 400, wantMsg: "malformed JSON"},
		{name: "JSON array", contentType: jsonCT, body: "[" + valid + "]", want: 400, wantMsg: "must be a JSON object"},
		{name: "JSON null", contentType: jsonCT, body: `null`, want: 400, wantMsg: "must be a JSON object"},
		{name: "JSON string", contentType: jsonCT, body: `"fine-id"`, want: 400, wantMsg: "must be a JSON object"},
		{name: "two JSON values", contentType: jsonCT, body: valid + valid, want: 400, wantMsg: "after the top-level value"},
		{name: "byte order mark", contentType: jsonCT, body: "\ufeff" + valid, want: 400, wantMsg: "malformed JSON"},
		{name: "invalid UTF-8", contentType: jsonCT, body: `{"experiment": {"id": "fine-id", "key": "` + "\xff\xfe" + `"}}`, want: 400, wantMsg: "UTF-8"},
		{name: "unknown top-level field", contentType: jsonCT, body: `{"experiment": {"id": "fine-id"}, "admin": true}`, want: 400, wantMsg: "unknown field"},
		{name: "duplicated experiment", contentType: jsonCT, body: `{"experiment": {"id": "a"}, "experiment": {"id": "b"}}`, want: 400, wantMsg: "duplicated key"},
		{name: "duplicated id", contentType: jsonCT, body: `{"experiment": {"id": "a", "id": "b"}}`, want: 400, wantMsg: "duplicated key"},
		{name: "deeply nested arrays", contentType: jsonCT, body: `{"experiment": {"id": "fine-id", "x": ` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}`, want: 400, wantMsg: "nested"},
		{name: "deeply nested objects", contentType: jsonCT, body: `{"experiment": {"id": "fine-id", "x": ` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat("}", 40) + `}}`, want: 400, wantMsg: "nested"},
		// experiment itself.
		{name: "experiment missing", contentType: jsonCT, body: `{}`, want: 400, wantMsg: `"experiment" is missing`},
		{name: "experiment null", contentType: jsonCT, body: `{"experiment": null}`, want: 400, wantMsg: `"experiment" is missing`},
		{name: "experiment a string", contentType: jsonCT, body: `{"experiment": "fine-id"}`, want: 400, wantMsg: "must be a JSON object"},
		{name: "experiment an array", contentType: jsonCT, body: `{"experiment": [{"id": "fine-id"}]}`, want: 400, wantMsg: "must be a JSON object"},
		{name: "experiment a number", contentType: jsonCT, body: `{"experiment": 1}`, want: 400, wantMsg: "must be a JSON object"},
		// experiment.id.
		{name: "id missing", contentType: jsonCT, body: `{"experiment": {"key": "k"}}`, want: 400, wantMsg: `"experiment.id" is missing`},
		{name: "id empty", contentType: jsonCT, body: idBody(`""`), want: 400, wantMsg: "is empty"},
		{name: "id null", contentType: jsonCT, body: idBody(`null`), want: 400, wantMsg: "must be a string, got null"},
		{name: "id a number", contentType: jsonCT, body: idBody(`42`), want: 400, wantMsg: "must be a string, got a number"},
		{name: "id a boolean", contentType: jsonCT, body: idBody(`true`), want: 400, wantMsg: "must be a string"},
		{name: "id an object", contentType: jsonCT, body: idBody(`{"id": "x"}`), want: 400, wantMsg: "must be a string"},
		{name: "id with spaces", contentType: jsonCT, body: idBody(`"my experiment"`), want: 400, wantMsg: "character ' '"},
		{name: "id only a space", contentType: jsonCT, body: idBody(`" "`), want: 400, wantMsg: "must start with a letter or a digit"},
		{name: "id with unicode", contentType: jsonCT, body: idBody(`"expérience"`), want: 400, wantMsg: "character 'é'"},
		{name: "id with an emoji", contentType: jsonCT, body: idBody(`"run-\ud83d\ude80"`), want: 400, wantMsg: "character"},
		{name: "id with a slash", contentType: jsonCT, body: idBody(`"a/b"`), want: 400, wantMsg: "character '/'"},
		{name: "id a path traversal", contentType: jsonCT, body: idBody(`"../../etc/passwd"`), want: 400, wantMsg: "must start with a letter or a digit"},
		{name: "id with a backslash", contentType: jsonCT, body: idBody(`"a\\b"`), want: 400, wantMsg: `character '\\'`},
		{name: "id with a null byte", contentType: jsonCT, body: idBody(`"a\u0000b"`), want: 400, wantMsg: `character '\x00'`},
		{name: "id with a newline", contentType: jsonCT, body: idBody(`"a\nb"`), want: 400, wantMsg: `character '\n'`},
		{name: "id with a colon", contentType: jsonCT, body: idBody(`"ns:name"`), want: 400, wantMsg: "character ':'"},
		{name: "id starting with '-'", contentType: jsonCT, body: idBody(`"-rf"`), want: 400, wantMsg: "must start with a letter or a digit"},
		{name: "id starting with '.'", contentType: jsonCT, body: idBody(`".hidden"`), want: 400, wantMsg: "must start with a letter or a digit"},
		{name: "id of 129 characters", contentType: jsonCT, body: idBody(`"` + strings.Repeat("a", 129) + `"`), want: 400, wantMsg: "the limit is 128"},
		{name: "id of 300 characters", contentType: jsonCT, body: idBody(`"` + strings.Repeat("Ab9", 100) + `"`), want: 400, wantMsg: "300 characters long"},
		// Too large. The limit is 64 KiB; with a Content-Length the
		// backend refuses before reading, without one it stops reading at
		// the limit.
		{name: "64 KiB + 1 with Content-Length", contentType: jsonCT, body: pad(64<<10 + 1 - len(pad(0))), want: 413, wantMsg: "limit is 65536"},
		{name: "70 KiB chunked", contentType: jsonCT, body: pad(70 << 10), chunked: true, want: 413, wantMsg: "limit of 65536"},
		{name: "8 MiB with Content-Length", contentType: jsonCT, body: pad(8 << 20), want: 413, wantMsg: "limit is 65536"},
		{name: "8 MiB chunked", contentType: jsonCT, body: pad(8 << 20), chunked: true, want: 413, wantMsg: "limit of 65536"},
	}
}

// onlyReader hides a reader's length, so net/http sends the body chunked.
type onlyReader struct{ io.Reader }

func (r badRequest) request(ctx context.Context, base string) (*http.Request, error) {
	method, path := r.method, r.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/experiment"
	}
	var body io.Reader
	if r.body != "" || method == http.MethodPost {
		body = bytes.NewReader([]byte(r.body))
		if r.chunked {
			body = onlyReader{body}
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, err
	}
	if r.chunked {
		req.ContentLength = -1
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	return req, nil
}

func TestBadInput(t *testing.T) {
	legit := []string{
		"aB3dE9xQ2mNpL7", "AB3DE9XQ2MNPL7", "ab3de9xq2mnpl7", // differ only in case
		"a.b", "a_b", "a-b", "a..b", "a.-_b", // differ only in punctuation
		"0", "9", "x.", "x_", "x-", "E1", "e1",
		"run_2024.01-a", "A1.b2_C3-d4",
		strings.Repeat("a", 128), strings.Repeat("A", 128), strings.Repeat("a", 127) + "B", // the longest
		strings.Repeat("a", 47) + "b", strings.Repeat("a", 47) + "c", // same readable part once cut to fit 63
	}
	f := features.New("bad input gets a 4xx with a message and creates nothing; odd valid IDs get distinct Jobs").
		Setup(backendAndNoJobs).
		Assess("every malformed request is refused with its documented code", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			client := newClient(4, true)
			cases := badRequests()
			if len(cases) < 30 {
				t.Fatalf("only %d bad requests", len(cases))
			}
			for _, c := range cases {
				req, err := c.request(ctx, base)
				if err != nil {
					t.Fatalf("%s: build request: %v", c.name, err)
				}
				a, err := send(client, req)
				if err != nil {
					errorf(t, "%s: %v", c.name, err)
					continue
				}
				checkError(t, c.name, a, c.want, c.wantMsg)
				if n := allJobs(ctx, t); n != 0 {
					t.Fatalf("%s: %d Jobs exist in %s after a refused request, want 0", c.name, n, ns)
				}
			}
			t.Logf("%d malformed requests refused, no Job created", len(cases))
			return ctx
		}).
		Assess("legitimate odd IDs get 201 and distinct valid Job names", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			gc := apiWith(t, suite.backend.URL(), newClient(4, true))
			byName := map[string]string{}
			for _, id := range legit {
				sub, err := gc.Submit(ctx, experiment(id, ""))
				if err != nil {
					errorf(t, "POST id %q: %v, want 201", id, err)
					continue
				}
				if sub.ID != id || !sub.Created || sub.Namespace != ns {
					t.Errorf("POST id %q: answer %+v, want 201 in %s", id, sub, ns)
					continue
				}
				if errs := validation.IsDNS1123Label(sub.Job); len(errs) > 0 {
					t.Errorf("id %q: Job name %q is not a DNS-1123 label: %v", id, sub.Job, errs)
				}
				if other, dup := byName[sub.Job]; dup {
					t.Errorf("ids %q and %q share the Job %s", id, other, sub.Job)
				}
				byName[sub.Job] = id
			}
			jobs := managedJobs(ctx, t)
			if len(jobs) != len(legit) {
				t.Errorf("%d Jobs for %d IDs", len(jobs), len(legit))
			}
			for _, j := range jobs {
				if id, ok := byName[j.Name]; !ok || j.Annotations[annotID] != id {
					t.Errorf("Job %s has experiment-id %q, answers named it for %q", j.Name, j.Annotations[annotID], id)
				}
			}
			return ctx
		}).
		Assess("a body at the limit, of characters JSON may escape, still fits the runner's one argument", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Raw: the Go client's JSON encoder escapes <, >, & and U+2028
			// (\u003c...), which would take the body over the limit; these
			// characters are what the test sends, unescaped.
			client := newClient(1, true)
			for _, c := range []struct{ id, fill string }{{"html-chars", "<>&"}, {"line-separators", "\u2028"}} {
				prefix := `{"experiment": {"id": "` + c.id + `", "s": "`
				room := 64<<10 - len(prefix) - len(`"}}`)
				body := prefix + strings.Repeat(c.fill, room/len(c.fill)) + `"}}`
				a, err := postRaw(ctx, client, suite.backend.URL(), body)
				if err != nil || a.Code != http.StatusCreated {
					errorf(t, "%s: POST of %d bytes: %v %v, want 201", c.id, len(body), a, err)
					continue
				}
				var ca wire.Submission
				if err := json.Unmarshal(a.Body, &ca); err != nil {
					t.Fatalf("answer %s: %v", short(a.Body), err)
				}
				job, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, ca.Job, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("get Job %s: %v", ca.Job, err)
				}
				args := job.Spec.Template.Spec.Containers[0].Args
				// Linux refuses a single argument of 128 KiB or more
				// (MAX_ARG_STRLEN, NUL included): the pod would never start.
				if len(args) != 1 || len(args[0]) >= 128<<10 {
					t.Errorf("%s: a %d-byte body became runner args of %d bytes, want one argument under 128 KiB", c.id, len(body), len(strings.Join(args, "")))
				}
			}
			return ctx
		}).
		Assess("a retry gets 200 and the same ID with another body 409, creating nothing", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			client := newClient(1, true)
			gc := apiWith(t, base, newClient(1, true))
			before := allJobs(ctx, t)
			for _, id := range []string{"aB3dE9xQ2mNpL7", strings.Repeat("A", 128)} {
				// Same content, other key order and spacing: still a retry.
				// Raw, since the Go client would send it compacted, as it
				// sent the first POST.
				retry := `{ "experiment": { "params": {"layers": [64, 32], "lr": 0.01}, "key": "k-` + id + `", "id": "` + id + `" } }`
				a, err := postRaw(ctx, client, base, retry)
				if err != nil || a.Code != http.StatusOK {
					errorf(t, "retry of %q: %v %v, want 200", id, a, err)
				}
				_, err = gc.Submit(ctx, experiment(id, `, "extra": 1`))
				checkRefused(t, "same ID "+id+", other body", err, http.StatusConflict, "different body")
			}
			if after := allJobs(ctx, t); after != before {
				t.Errorf("retries and conflicts changed the Job count from %d to %d", before, after)
			}
			return ctx
		}).
		Assess("the status route refuses bad IDs too", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			gc := apiWith(t, suite.backend.URL(), newClient(1, true))
			// The client escapes them into the path: /experiments/a%20b,
			// /experiments/%C3%A9.
			for _, id := range []string{"a b", ".hidden", strings.Repeat("a", 129), "é"} {
				_, err := gc.Get(ctx, id)
				checkRefused(t, "GET /experiments/"+id, err, http.StatusBadRequest, "experiment.id")
			}
			_, err := gc.Get(ctx, "no-such-id")
			checkRefused(t, "GET /experiments/no-such-id", err, http.StatusNotFound, "no-such-id")
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
