package worker

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// memoryUpstream answers every call as iDenfy would, without a network.
type memoryUpstream struct{}

func (memoryUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	body := `{"request_id":"3d50e1584e0946e789e0185c009aaadf"}`
	if strings.HasSuffix(r.URL.Path, idenfy.PathVerifySMS) {
		body = `{"is_verified":true}`
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    r,
	}, nil
}

// benchWorker is a worker whose calls go to memoryUpstream. It is not
// started: the handler core needs no NATS for a send without limits; the
// connection only satisfies New.
func benchWorker(b *testing.B) *Worker {
	b.Helper()
	ns := natstest.RunServer(b, &server.Options{})
	nc := natstest.Connect(b, ns.ClientURL())
	client, err := idenfy.NewClient(idenfy.Config{BaseURL: "https://ivs.idenfy.com", APIKey: "k", APISecret: "s"},
		idenfy.WithHTTPClient(&http.Client{Transport: memoryUpstream{}}))
	if err != nil {
		b.Fatal(err)
	}
	w, err := New(Config{Conn: nc, Client: client, HashKey: []byte("bench"), Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkHandleSend is the handler core of a send: guard, the call under
// the backoff policy, the contract result, against an in-memory upstream.
func BenchmarkHandleSend(b *testing.B) {
	w := benchWorker(b)
	ctx := context.Background()
	req := messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "signup-42"}
	b.ReportAllocs()
	for b.Loop() {
		t := &task{op: opSend, intake: intakeRequest, send: req, w: w}
		o := w.handle(ctx, ctx, t, keyRecord{})
		if o.send.Status != messages.StatusSent {
			b.Fatalf("handle = %+v", o.send)
		}
	}
}

// BenchmarkDecodeHandleEncode adds what surrounds the core on every
// request: decoding the payload and encoding the result.
func BenchmarkDecodeHandleEncode(b *testing.B) {
	w := benchWorker(b)
	ctx := context.Background()
	payload := []byte(`{"phone_number":"+12025550163","correlation_id":"signup-42"}`)
	b.ReportAllocs()
	for b.Loop() {
		t := &task{op: opSend, intake: intakeRequest, w: w}
		if e := t.decode(payload); e != nil {
			b.Fatal(e)
		}
		o := w.handle(ctx, ctx, t, keyRecord{})
		if len(o.encode()) == 0 {
			b.Fatal("empty result")
		}
	}
}
