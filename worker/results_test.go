package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// storedResults reads every event in the results stream.
func storedResults(t testing.TB, js jetstream.JetStream) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, worker.DefaultResultsStream)
	if err != nil {
		t.Fatalf("results stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	if info.State.Msgs == 0 {
		return nil
	}
	batch, err := cons.Fetch(int(info.State.Msgs), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

// TestResultsAreStored: the worker creates the results stream as the
// README says, every event of both intakes is stored in it, and the same
// outcome published again (a duplicate answered from the store) is stored
// once, while core subscribers see every event as before.
func TestResultsAreStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, worker.DefaultResultsStream)
	if err != nil {
		t.Fatalf("results stream: %v", err)
	}
	cfg := s.CachedInfo().Config
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != h.subj.Results || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.Storage != jetstream.FileStorage || cfg.MaxAge != worker.DefaultResultsMaxAge || cfg.Duplicates <= 0 {
		t.Errorf("results stream = %+v, want subjects %s, limits retention, file storage, max age %v, a dedup window",
			cfg, h.subj.Results, worker.DefaultResultsMaxAge)
	}

	core := h.subscribe(h.subj.Results)
	hdr := header(messages.HeaderMsgID, "stored-1")
	first := h.send(messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "stored"}, hdr)
	again := h.send(messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "stored"}, hdr)
	if first.Status != messages.StatusSent || again.RequestID != first.RequestID {
		t.Fatalf("sends = %+v, %+v, want one sent result twice", first, again)
	}
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: usPhone2, CorrelationID: "stored-job"}, header(messages.HeaderMsgID, "stored-2"))
	ids := map[string]bool{}
	for range 3 {
		m := next(t, core)
		ids[m.Header.Get(messages.HeaderMsgID)] = true
	}
	if len(ids) != 2 || ids[""] {
		t.Errorf("core subscribers saw events with Nats-Msg-Id %v, want two ids over three events", ids)
	}

	var got []jetstream.Msg
	waitFor(t, "the events to be stored", func() bool {
		got = storedResults(t, h.js)
		return len(got) >= 2
	})
	byCorrelation := map[string]int{}
	for _, m := range got {
		var r messages.SendResult
		decodeInto(t, m.Data(), &r)
		byCorrelation[r.CorrelationID]++
	}
	if len(got) != 2 || byCorrelation["stored"] != 1 || byCorrelation["stored-job"] != 1 {
		t.Errorf("results stream holds %v, want one event of each request", byCorrelation)
	}
}

// TestResultsStreamOff: with WORKER_RESULTS_STREAM=off, events are core
// publishes only and no stream is made.
func TestResultsStreamOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.ResultsStream = worker.ResultsStreamOff }))
	core := h.subscribe(h.subj.ResultsSend)
	if r := h.send(messages.SendRequest{PhoneNumber: usPhone}, nil); r.Status != messages.StatusSent {
		t.Fatalf("send = %+v", r)
	}
	next(t, core)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.Stream(ctx, worker.DefaultResultsStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("results stream with off = %v, want none", err)
	}
}

// TestJobIsAckedOnlyOnceItsResultIsStored: while the results stream is
// away, a job is not acked but handed back; once the stream is back, the
// redelivery stores the outcome kept in the claims store, without a second
// call to iDenfy.
func TestJobIsAckedOnlyOnceItsResultIsStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withWorkerOptions(worker.WithJobRetryDelay(50*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, worker.DefaultResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if err := h.js.DeleteStream(ctx, worker.DefaultResultsStream); err != nil {
		t.Fatal(err)
	}
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "held"}, header(messages.HeaderMsgID, "held-1"))
	waitFor(t, "the event to fail and the job to go back", func() bool {
		return h.metric("idenfy_worker_result_events_failed_total") >= 1 && h.metric("idenfy_worker_jobs_handed_back_total") >= 1
	})
	jobs, err := h.js.Stream(ctx, worker.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := jobs.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("jobs stream while the results stream is away = %+v, %v; want the job still in it", info, err)
	}
	if _, err := h.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to be answered and acked", func() bool {
		info, err := jobs.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	got := storedResults(t, h.js)
	if len(got) != 1 {
		t.Fatalf("results stream holds %d events, want 1", len(got))
	}
	var r messages.SendResult
	decodeInto(t, got[0].Data(), &r)
	if r.Status != messages.StatusSent || r.CorrelationID != "held" {
		t.Errorf("stored event = %+v, want the job's sent result", r)
	}
	if n := h.sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends, want 1: the redelivery is answered from the store", n)
	}
}

// TestReplyToCarriesTheEventID: a job's Reply-To hears its result with the
// Nats-Msg-Id of the stored event, so that a caller who hears the same
// outcome twice (a redelivery) can tell.
func TestReplyToCarriesTheEventID(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	reply := h.subscribe("signup.replies.event-id")
	event := h.subscribe(h.subj.ResultsSend)
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "reply-id"},
		header(messages.HeaderMsgID, "reply-id-1", messages.HeaderReplyTo, "signup.replies.event-id"))
	r, e := next(t, reply), next(t, event)
	if id := r.Header.Get(messages.HeaderMsgID); id == "" || id != e.Header.Get(messages.HeaderMsgID) || string(r.Data) != string(e.Data) {
		t.Errorf("Reply-To got %q with Nats-Msg-Id %q; the results subject %q with %q: want the same result and id",
			r.Data, id, e.Data, e.Header.Get(messages.HeaderMsgID))
	}
}

// TestResultsStreamThatMissesTheSubjectsIsRefused: an existing stream named
// as the results stream that does not capture the result subjects stops
// Start, naming it, instead of failing every event.
func TestResultsStreamThatMissesTheSubjectsIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.DefaultResultsStream, Subjects: []string{"elsewhere.>"}}); err != nil {
		t.Fatal(err)
	}
	err := h.w.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), worker.DefaultResultsStream) || !strings.Contains(err.Error(), h.subj.Results) {
		t.Errorf("Start with a results stream capturing elsewhere.> = %v, want an error naming the stream and %s", err, h.subj.Results)
	}
}
