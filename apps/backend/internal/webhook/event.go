package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/webhooksig"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// TypePrefix starts every event type: dev.gmini.experiment.<state in lower
// case>, such as dev.gmini.experiment.succeeded.
const TypePrefix = "dev.gmini.experiment."

// EventType is the CloudEvents type of a change to state st.
func EventType(st string) string { return TypePrefix + strings.ToLower(st) }

// Source is the CloudEvents source of namespace ns's experiments.
func Source(ns string) string { return "/namespaces/" + ns + "/experiments" }

// cloudEvent is the CloudEvent of e: id the event's seq, the same for every
// target and every attempt; data the wire.Event the status streams send.
func cloudEvent(namespace string, e history.Event) (event.Event, error) {
	ev := event.New(event.CloudEventsVersionV1)
	ev.SetID(strconv.FormatInt(e.Seq, 10))
	ev.SetSource(Source(namespace))
	ev.SetType(EventType(e.State))
	ev.SetSubject(e.ID)
	ev.SetTime(e.At)
	data, err := json.Marshal(wire.Event{
		Seq: e.Seq, Experiment: e.ID, Set: e.Set, Submitter: e.Submitter, State: e.State,
		Reason: e.Reason, Message: e.Message, ExitCode: e.ExitCode, Time: e.At,
	})
	if err != nil {
		return ev, err
	}
	if err := ev.SetData(event.ApplicationJSON, data); err != nil {
		return ev, err
	}
	return ev, ev.Validate()
}

// newRequest is the POST of ev to u in binary mode (attributes as ce-*
// headers, the data as the body), signed with secret at now.
func newRequest(ctx context.Context, u string, ev event.Event, secret []byte, now time.Time) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	ctx = binding.WithForceBinary(ctx)
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), req); err != nil {
		return nil, fmt.Errorf("encode cloudevent %s: %w", ev.ID(), err)
	}
	body := ev.Data()
	// WriteRequest's body is the data itself; set it again from the same
	// bytes, so what is signed is what is sent, and a redirect or retry
	// inside net/http could resend it.
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.ContentLength = int64(len(body))
	req.Header.Set(webhooksig.Header, webhooksig.Sign(secret, now, ev.ID(), body))
	req.Header.Set("User-Agent", "gmini-webhook/1")
	return req, nil
}
