//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/webhooksig"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/manifests"
)

const (
	// hookNamespace is testdata/webhook-local's: dev with webhooks.
	hookNamespace = "gmini-hook"
	// hookDown is how long the receiver refuses deliveries: first by
	// closing the connection, then with 503.
	hookDown = time.Minute
	// hookExperiments are submitted while it is down.
	hookExperiments = 4
)

// hookRequest is one request the receiver got, as it judged it.
type hookRequest struct {
	at      time.Time
	path    string
	code    int // 0: the connection was closed without an answer
	id      string
	typ     string
	source  string
	subject string
	data    wire.Event
	err     error // not a binary CloudEvent, or a bad signature
}

// hookReceiver is a webhook receiver in the test process, on the host's
// end of the local node's veth, which the node's pods reach. Until up it
// refuses; from then on it checks every request (a binary-mode CloudEvent,
// its X-Gmini-Signature with the sink's or the notify secret) and answers
// 200, or 400 to a request that fails the checks.
type hookReceiver struct {
	srv                      *http.Server
	sinkSecret, notifySecret []byte

	mu      sync.Mutex
	downAt  time.Time // when it starts refusing by 503 instead of closing
	upAt    time.Time
	got     []hookRequest
	started bool
}

func (rc *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	got := hookRequest{at: time.Now(), path: r.URL.Path, id: r.Header.Get("ce-id")}
	rc.mu.Lock()
	started, closeUntil, upAt := rc.started, rc.downAt, rc.upAt
	rc.mu.Unlock()
	secret := rc.sinkSecret
	if strings.HasPrefix(r.URL.Path, "/notify/") {
		secret = rc.notifySecret
	}
	// Binary mode: the attributes are ce-* headers, the data the body
	// (the backend's unit tests decode the same with the CloudEvents SDK).
	h := r.Header
	got.typ, got.source, got.subject = h.Get("ce-type"), h.Get("ce-source"), h.Get("ce-subject")
	_, timeErr := time.Parse(time.RFC3339Nano, h.Get("ce-time"))
	switch {
	case h.Get("ce-specversion") != "1.0":
		got.err = fmt.Errorf("ce-specversion %q, want 1.0", h.Get("ce-specversion"))
	case got.id == "" || got.typ == "" || got.source == "" || timeErr != nil:
		got.err = fmt.Errorf("missing or bad attributes: id %q, type %q, source %q, time %q", got.id, got.typ, got.source, h.Get("ce-time"))
	case h.Get("Content-Type") != "application/json":
		got.err = fmt.Errorf("Content-Type %q, want application/json", h.Get("Content-Type"))
	default:
		if got.err = json.Unmarshal(body, &got.data); got.err == nil {
			got.err = webhooksig.Verify(secret, h.Get(webhooksig.Header), got.id, body, time.Now(), 0)
		}
	}
	switch {
	case !started || got.at.Before(closeUntil):
		// Down: the connection closes without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
	case got.at.Before(upAt):
		got.code = http.StatusServiceUnavailable
	case got.err != nil:
		got.code = http.StatusBadRequest
	default:
		got.code = http.StatusOK
	}
	rc.mu.Lock()
	rc.got = append(rc.got, got)
	rc.mu.Unlock()
	if got.code != 0 {
		w.WriteHeader(got.code)
	}
}

// goDown starts the down period now: connections closed for half of it,
// 503 for the rest.
func (rc *hookReceiver) goDown(d time.Duration) time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	now := time.Now()
	rc.started, rc.downAt, rc.upAt = true, now.Add(d/2), now.Add(d)
	return rc.upAt
}

func (rc *hookReceiver) requests() []hookRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hookObjects are testdata/webhook-local's objects with the Secret
// gmini-webhooks (the file below) and the webhooks NetworkPolicy narrowed
// to the receiver, as an overlay with a receiver of its own does.
func hookObjects(t *testing.T, receiver netip.AddrPort, file string) []*unstructured.Unstructured {
	t.Helper()
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Objects(l.Path("tools", "e2e", "testdata", "webhook-local"))
	if err != nil {
		t.Fatal(err)
	}
	narrowed := false
	for _, o := range objs {
		if o.GetKind() != "NetworkPolicy" || o.GetName() != "gmini-backend-webhooks" {
			continue
		}
		egress := []any{map[string]any{
			"to":    []any{map[string]any{"ipBlock": map[string]any{"cidr": netip.PrefixFrom(receiver.Addr(), 32).String()}}},
			"ports": []any{map[string]any{"protocol": "TCP", "port": int64(receiver.Port())}},
		}}
		if err := unstructured.SetNestedSlice(o.Object, egress, "spec", "egress"); err != nil {
			t.Fatal(err)
		}
		narrowed = true
	}
	if !narrowed || objs[0].GetKind() != "Namespace" || objs[0].GetName() != hookNamespace {
		t.Fatalf("testdata/webhook-local: want the Namespace %s first and the NetworkPolicy gmini-backend-webhooks", hookNamespace)
	}
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   map[string]any{"name": "gmini-webhooks", "namespace": hookNamespace},
		"data":       map[string]any{"webhooks.yaml": base64.StdEncoding.EncodeToString([]byte(file))},
	}}
	return append([]*unstructured.Unstructured{objs[0], secret}, objs[1:]...)
}

// TestWebhook: with a webhooks file (a sink, and notify URLs allowed on the
// receiver's host), experiments that complete while the receiver is down
// are delivered once it is up: every completion to the sink and to the
// experiment's notify URL, each event with its own ce-id, the same for both
// targets and on every retry, every request a signed binary CloudEvent. A
// notify URL outside the allow-list is refused with 400, nothing created.
// hostAddr is a cluster with an address of this machine its pods reach.
type hostAddr interface {
	HostAddr(context.Context) (netip.Addr, error)
}

func TestWebhook(t *testing.T) {
	var (
		rc       *hookReceiver
		receiver netip.AddrPort
		c        *gmini.Client
	)
	f := features.New("webhooks: a receiver down for a minute gets every completion once it is up, signed, ce-id stable; notify outside the allow-list refused").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ha, ok := provider.(hostAddr)
			if !ok {
				requireOrSkip(t, "webhook", "the webhook test needs a receiver of the test process that the node's pods reach: the local node has one (the host's end of its veth), kind another (its Docker network's gateway), this cluster not")
			}
			addr, err := ha.HostAddr(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
			if err != nil {
				t.Fatalf("listen on %s, where the node's pods reach this machine: %v", addr, err)
			}
			receiver = netip.MustParseAddrPort(ln.Addr().String())
			rc = &hookReceiver{sinkSecret: []byte(randomSecret(t)), notifySecret: []byte(randomSecret(t))}
			rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				if err := rc.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					t.Errorf("receiver: %v", err)
				}
			}()
			// The receiver is on an internal address to the backend's
			// guard (in 198.18.0.0/15 here, a private range on a stock
			// Docker): the sink and the allowNotify entry name it as an IP
			// literal, which allows it. Plain HTTP, allowed
			// explicitly: the pod has no CA for a certificate of ours.
			file := fmt.Sprintf(`sinks:
  - name: e2e
    url: http://%s/sink
    allowInsecure: true
    secret: %s
allowNotify:
  - host: "%s"
    allowInsecure: true
notifySecret: %s
`, receiver, rc.sinkSecret, receiver, rc.notifySecret)
			if err := deploy.ApplyObjects(ctx, logger, cfg.Client().RESTConfig(), hookObjects(t, receiver, file)); err != nil {
				t.Fatal(err)
			}
			if _, err := deploy.WaitBackend(logger, hookNamespace, 3*time.Minute)(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			c = backendIn(t, cfg, hookNamespace)
			t.Logf("receiver at http://%s; backend in %s", receiver, hookNamespace)
			return ctx
		}).
		Assess("a notify URL outside the allow-list is refused with 400, nothing created", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			id := fmt.Sprintf("hook-refused-%d", time.Now().Unix())
			_, err := c.Submit(ctx, map[string]any{"id": id}, gmini.NotifyAt("https://hooks.example.com/steal"))
			if gmini.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), receiver.String()) {
				t.Fatalf("POST with a notify URL outside the allow-list = %v; want 400 naming the allowed host %s", err, receiver)
			}
			t.Logf("refused: %v", err)
			if _, err := c.Get(ctx, id); gmini.StatusCode(err) != http.StatusNotFound {
				t.Errorf("GET %s after the refusal = %v; want 404: nothing created or claimed", id, err)
			}
			jobs, err := clientset(t, cfg).BatchV1().Jobs(hookNamespace).List(ctx, metav1.ListOptions{})
			if err != nil || len(jobs.Items) != 0 {
				t.Errorf("Jobs after the refusal: %d, %v; want none", len(jobs.Items), err)
			}
			return ctx
		}).
		Assess("every completion is delivered once the receiver is up", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			upAt := rc.goDown(hookDown)
			start := time.Now()
			var ids []string
			for i := range hookExperiments {
				id := fmt.Sprintf("hook-%d-%d", start.Unix(), i)
				ids = append(ids, id)
				notify := fmt.Sprintf("http://%s/notify/%s", receiver, id)
				if _, err := c.Submit(ctx, map[string]any{"id": id, "key": "k"}, gmini.NotifyAt(notify)); err != nil {
					t.Fatalf("POST %s: %v", id, err)
				}
			}
			// They finish while the receiver is down.
			for _, id := range ids {
				err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
					st, err := c.Get(ctx, id)
					return err == nil && st.State == "Succeeded", nil
				})
				if err != nil {
					t.Fatalf("%s did not succeed: %v\n%s", id, err, deploy.Diagnose(ctx, clientset(t, cfg), hookNamespace, nil))
				}
			}
			t.Logf("%d experiments succeeded %s after the first POST; the receiver is up at +%s",
				len(ids), time.Since(start).Round(time.Second), upAt.Sub(start).Round(time.Second))

			// Delivered: GET /experiments/{id} says so for both targets.
			var statuses map[string]wire.Status
			err := wait.PollUntilContextTimeout(ctx, 2*time.Second, hookDown+5*time.Minute, true, func(ctx context.Context) (bool, error) {
				statuses = map[string]wire.Status{}
				done := true
				for _, id := range ids {
					st, err := c.Get(ctx, id)
					if err != nil {
						return false, nil
					}
					statuses[id] = st
					done = done && len(st.Deliveries) == 2 &&
						st.Deliveries[0].State == "delivered" && st.Deliveries[1].State == "delivered"
				}
				return done, nil
			})
			if err != nil {
				t.Fatalf("not every delivery done: %v; deliveries: %+v", err, statuses)
			}
			t.Logf("every delivery done %s after the first POST (%s after the receiver came up)",
				time.Since(start).Round(time.Second), time.Since(upAt).Round(time.Second))

			reqs := rc.requests()
			sinkID := map[string]string{} // experiment → ce-id delivered to the sink
			okCount := map[string]int{}   // path ce-id → 2xx answers
			for _, r := range reqs {
				if r.code == http.StatusOK {
					okCount[r.path+" "+r.id]++
					if r.path == "/sink" {
						sinkID[r.subject] = r.id
					}
				}
				if r.at.After(upAt) && r.err != nil {
					t.Errorf("request to %s at %s (ce-id %s): %v", r.path, r.at.Format(time.RFC3339Nano), r.id, r.err)
				}
				if r.err == nil && (r.typ != "dev.gmini.experiment.succeeded" || r.source != "/namespaces/"+hookNamespace+"/experiments" ||
					r.data.Experiment != r.subject || r.data.State != "Succeeded" || strconv.FormatInt(r.data.Seq, 10) != r.id) {
					t.Errorf("request to %s: type %q, source %q, subject %q, data %+v; want the Succeeded event of its experiment, ce-id its seq",
						r.path, r.typ, r.source, r.subject, r.data)
				}
			}
			seen := map[string]bool{}
			for _, id := range ids {
				ceID, ok := sinkID[id]
				if !ok {
					t.Errorf("%s: its completion never reached the sink with a 200", id)
					continue
				}
				if seen[ceID] {
					t.Errorf("ce-id %s delivered for two experiments", ceID)
				}
				seen[ceID] = true
				for _, path := range []string{"/sink", "/notify/" + id} {
					if n := okCount[path+" "+ceID]; n != 1 {
						t.Errorf("%s: event %s answered 200 at %s %d times, want once", id, ceID, path, n)
					}
					var refused, retriedIDs int
					for _, r := range reqs {
						if r.path != path || r.subject != id {
							continue
						}
						if r.code != http.StatusOK {
							refused++
						}
						if r.id != ceID {
							retriedIDs++
						}
					}
					if refused == 0 {
						t.Errorf("%s: no attempt at %s before the receiver was up; the test proves no retry", id, path)
					}
					if retriedIDs != 0 {
						t.Errorf("%s: %d requests at %s carried another ce-id than %s", id, retriedIDs, path, ceID)
					}
				}
				st := statuses[id]
				for _, d := range st.Deliveries {
					if strconv.FormatInt(d.Event, 10) != ceID || d.LastCode != http.StatusOK || d.Attempts < 2 || d.EventState != "Succeeded" {
						t.Errorf("%s: delivery %+v; want event %s delivered with 200 after a refused attempt", id, d, ceID)
					}
				}
				if k := slices.IndexFunc(st.Deliveries, func(d wire.Delivery) bool { return d.Kind == "notify" }); k < 0 ||
					st.Deliveries[k].Target != fmt.Sprintf("http://%s/notify/%s", receiver, id) {
					t.Errorf("%s: deliveries %+v; want one to its notify URL", id, st.Deliveries)
				}
			}
			var closed, unavailable int
			for _, r := range reqs {
				switch r.code {
				case 0:
					closed++
				case http.StatusServiceUnavailable:
					unavailable++
				}
			}
			t.Logf("receiver: %d requests (%d connections closed, %d answered 503, %d distinct events delivered to the sink)",
				len(reqs), closed, unavailable, len(seen))
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if rc != nil {
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_ = rc.srv.Shutdown(sctx)
			}
			// The namespace goes in the background; the cluster goes with
			// the suite.
			bg := metav1.DeletePropagationBackground
			if err := clientset(t, cfg).CoreV1().Namespaces().Delete(ctx, hookNamespace, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
				t.Logf("delete namespace %s: %v", hookNamespace, err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
