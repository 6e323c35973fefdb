package worker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// startedWorker starts a worker with cfg, its own intake of jobs off,
// against an embedded NATS server and the simulator (or cfg.Client, when
// set). Shutdown is the test's to call, or the cleanup's.
func startedWorker(t *testing.T, cfg Config) (*Worker, *nats.Conn, *idenfytest.Server) {
	t.Helper()
	ns := natstest.RunServer(t, nil)
	sim := idenfytest.NewServer(t)
	nc := natstest.Connect(t, ns.ClientURL())
	cfg.Conn, cfg.HashKey, cfg.DisableJobs = nc, []byte("k"), true
	if cfg.Breaker == (Breaker{}) {
		cfg.Breaker = Breaker{Off: true}
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	if cfg.Client == nil {
		cfg.Client = sim.Client()
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Shutdown(context.Background()) })
	return w, nc, sim
}

// A job delivered again after its outcome was stored (its ack lost, its
// ack wait run out) is answered from the store: same result, no second
// SMS. The worker's own intake is off, so that the test holds the stream
// message and hands the same delivery to the worker twice, as JetStream
// would redeliver it; the job has no Nats-Msg-Id, so its key is its stream
// sequence, the same on every delivery.
func TestRedeliveredJobIsAnsweredFromTheStore(t *testing.T) {
	w, nc, sim := startedWorker(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, created, err := w.ensureJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	results, err := nc.SubscribeSync(w.subj.ResultsSend)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "again"})
	if _, err := js.Publish(ctx, w.subj.JobsSend, data); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := <-batch.Messages()
	if !ok {
		t.Fatalf("no job fetched: %v", batch.Error())
	}

	intake := newJobIntake(w, cons, created)
	var got []messages.SendResult
	for delivery := 1; delivery <= 2; delivery++ {
		place := w.admission.enter(w.soft.Done(), intakeJob)
		intake.process(msg, place)
		place.leave()
		m, err := results.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("delivery %d: no result: %v", delivery, err)
		}
		var r messages.SendResult
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if got[0].Status != messages.StatusSent || got[1] != got[0] {
		t.Errorf("results = %+v then %+v, want the same sent result twice", got[0], got[1])
	}
	// The results stream keeps the outcome once: the republished event has
	// the same Nats-Msg-Id.
	rs, err := w.js.Stream(ctx, w.cfg.ResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := rs.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("results stream after a redelivery = %+v, %v; want 1 event", info, err)
	}
	if n := sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends, want 1", n)
	}
}

// WORKER_RATE_LIMIT holds calls back: at one call an hour, a second send
// gets no turn within its retry budget, and is answered rate_limited at once
// with when to ask again; iDenfy sees one call.
func TestRateLimitAnswersRateLimited(t *testing.T) {
	w, nc, sim := startedWorker(t, Config{RateLimit: RateLimit{N: 1, Per: time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(phone string) messages.SendResult {
		data, _ := json.Marshal(messages.SendRequest{PhoneNumber: phone})
		m, err := nc.RequestWithContext(ctx, w.subj.Send, data)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		var r messages.SendResult
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send("+12025550163"); r.Status != messages.StatusSent {
		t.Fatalf("first send = %+v, want sent", r)
	}
	r := send("+12025550164")
	if r.Error == nil || r.Error.Code != messages.CodeRateLimited || !r.Error.Retryable || r.Error.RetryAfter < 60 || r.Attempts != 0 {
		t.Errorf("second send = %+v, want rate_limited with a retry_after of most of an hour and no attempt", r)
	}
	if n := sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends in all, want 1", n)
	}
}
