package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// collector gathers the results published on a subject, by correlation_id.
type collector struct {
	t   testing.TB
	mu  sync.Mutex
	raw map[string][][]byte
}

func (h *harness) collect(subject string) *collector {
	h.t.Helper()
	c := &collector{t: h.t, raw: make(map[string][][]byte)}
	sub, err := h.nc.Subscribe(subject, func(msg *nats.Msg) {
		var env struct {
			CorrelationID string `json:"correlation_id"`
		}
		_ = json.Unmarshal(msg.Data, &env)
		c.mu.Lock()
		c.raw[env.CorrelationID] = append(c.raw[env.CorrelationID], msg.Data)
		c.mu.Unlock()
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

// wait returns the n-th (1-based) result of a correlation_id, waiting for it.
func (c *collector) wait(id string, n int) []byte {
	c.t.Helper()
	var got []byte
	waitFor(c.t, fmt.Sprintf("result %d of %s", n, id), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.raw[id]) >= n {
			got = c.raw[id][n-1]
			return true
		}
		return false
	})
	return got
}

func (c *collector) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.raw[id])
}

func sendResult(t testing.TB, data []byte) messages.SendResult {
	t.Helper()
	var r messages.SendResult
	decodeInto(t, data, &r)
	return r
}

func verifyResult(t testing.TB, data []byte) messages.VerifyResult {
	t.Helper()
	var r messages.VerifyResult
	decodeInto(t, data, &r)
	return r
}

func (h *harness) streamInfo() *jetstream.StreamInfo {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, worker.DefaultStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info
}

func (h *harness) consumerInfo() *jetstream.ConsumerInfo {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.js.Consumer(ctx, worker.DefaultStream, worker.DefaultConsumer)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info
}

// createStream makes the jobs stream the way an operator might, before any
// worker runs.
func (h *harness) createStream(cfg jetstream.StreamConfig) {
	h.t.Helper()
	if cfg.Name == "" {
		cfg.Name = worker.DefaultStream
	}
	if cfg.Subjects == nil {
		cfg.Subjects = []string{h.subj.Jobs}
	}
	cfg.Retention = jetstream.WorkQueuePolicy
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.js.CreateStream(ctx, cfg); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) createConsumer(cfg jetstream.ConsumerConfig) {
	h.t.Helper()
	cfg.Durable = worker.DefaultConsumer
	cfg.AckPolicy = jetstream.AckExplicitPolicy
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.js.CreateConsumer(ctx, worker.DefaultStream, cfg); err != nil {
		h.t.Fatal(err)
	}
}

// waitDrained waits until the stream holds no job: every one was acked.
func (h *harness) waitDrained() {
	h.t.Helper()
	waitFor(h.t, "the jobs stream to drain", func() bool { return h.streamInfo().State.Msgs == 0 })
}

func TestJobResultOnResultsAndReplyTo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	results := h.collect(h.subj.ResultsSend)
	replies := h.subscribe("signup.replies.42")

	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "job-1"},
		header(messages.HeaderMsgID, "job-1", messages.HeaderReplyTo, "signup.replies.42"))

	got := results.wait("job-1", 1)
	res := sendResult(t, got)
	if res.Status != messages.StatusSent || res.RequestID == "" || res.Attempts != 1 {
		t.Errorf("job result = %+v, want sent with a request_id after 1 attempt", res)
	}
	if reply := next(t, replies); string(reply.Data) != string(got) {
		t.Errorf("Reply-To got %s, want the result %s", reply.Data, got)
	}
	h.waitDrained()
	if n := h.sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends, want 1", n)
	}
	if out := h.sim.Outbox("+12025550163"); len(out) != 1 {
		t.Errorf("outbox holds %d deliveries, want 1", len(out))
	}
}

// A duplicate published after the stream's dedup window forgot the first
// is answered from the store: nobody is texted twice.
func TestJobDuplicateBeyondDedupWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart())
	h.createStream(jetstream.StreamConfig{Duplicates: 100 * time.Millisecond, Storage: jetstream.FileStorage})
	h.start()
	results := h.collect(h.subj.ResultsSend)
	job := messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "dup"}

	h.publishJob(h.subj.JobsSend, job, header(messages.HeaderMsgID, "dup-1"))
	first := sendResult(t, results.wait("dup", 1))
	h.waitDrained()
	republishBeyondWindow(t, h, job, "dup-1")
	second := sendResult(t, results.wait("dup", 2))

	if first.Status != messages.StatusSent || second.RequestID != first.RequestID {
		t.Errorf("results = %+v then %+v, want the same sent result twice", first, second)
	}
	if n := h.sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends, want 1", n)
	}
	// The operator's stream was used as it was.
	if d := h.streamInfo().Config.Duplicates; d != 100*time.Millisecond {
		t.Errorf("stream dedup window = %v, want the operator's 100ms", d)
	}
}

// republishBeyondWindow publishes a job again with the same Nats-Msg-Id until
// JetStream stops calling it a duplicate, i.e. its dedup window has passed.
func republishBeyondWindow(t testing.TB, h *harness, job any, msgID string) {
	t.Helper()
	waitFor(t, "the dedup window to pass", func() bool {
		return !h.publishJob(h.subj.JobsSend, job, header(messages.HeaderMsgID, msgID)).Duplicate
	})
}

func TestJobWithoutMsgIDIsKeyedBySequence(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	results := h.collect(h.subj.ResultsSend)
	for i := range 3 {
		h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: fmt.Sprint("seq-", i)}, nil)
	}
	for i := range 3 {
		if res := sendResult(t, results.wait(fmt.Sprint("seq-", i), 1)); res.Status != messages.StatusSent {
			t.Errorf("job %d = %+v, want sent", i, res)
		}
	}
	// Three jobs with the same content but no Msg-Id are three sends.
	if n := h.sim.Stats().SendSMS; n != 3 {
		t.Errorf("iDenfy got %d sends, want 3", n)
	}
}

// Two workers racing for one key: while the first holds the key's claim
// with its call to iDenfy in flight, the other meets the claim with two
// jobs of that key, hands them back, and answers them with the first's
// outcome. The proxy holds the first call until the hand-backs show that
// the other worker tried the key, so the race happens on every run. Worker a
// takes only requests and b only jobs, which decides who is first.
func TestTwoWorkersRaceForOneKey(t *testing.T) {
	t.Parallel()
	p := newUpstreamProxy(t)
	// A short lease makes the hand-backs short: they wait for what the
	// holder's lease has left (on the fake clock, where it never runs out).
	a := newHarness(t, withoutStart(), through(t, p), withAttemptTimeout(time.Minute),
		withConfig(func(c *worker.Config) { c.DisableJobs = true }),
		withWorkerOptions(worker.WithLease(time.Second)))
	a.createStream(jetstream.StreamConfig{Duplicates: 100 * time.Millisecond, Storage: jetstream.FileStorage})
	a.start()
	b := newHarness(t, sharing(a), through(t, p), withAttemptTimeout(time.Minute),
		withConfig(func(c *worker.Config) { c.DisableRequests = true }))
	results := a.collect(a.subj.ResultsSend)
	job := messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "race"}
	handedBack := func() float64 { return b.metric("idenfy_worker_jobs_handed_back_total", "operation", "send") }

	p.hold()
	viaRequest := a.askAsync("send", job, header(messages.HeaderMsgID, "race-1"))
	waitFor(t, "worker a's send to reach iDenfy", func() bool { return p.arrivals() == 1 })
	a.publishJob(a.subj.JobsSend, job, header(messages.HeaderMsgID, "race-1"))
	waitFor(t, "worker b to hand the job back", func() bool { return handedBack() >= 1 })
	republishBeyondWindow(t, a, job, "race-1")
	waitFor(t, "worker b to hand the second job back", func() bool { return handedBack() >= 2 })
	if n := p.arrivals(); n != 1 {
		t.Fatalf("%d calls reached iDenfy while worker a held the key, want 1", n)
	}
	p.release()

	reply := <-viaRequest
	if reply.err != nil {
		t.Fatalf("request: %v", reply.err)
	}
	first := reply.x.send
	got := []messages.SendResult{first}
	for i := range 3 {
		got = append(got, sendResult(t, results.wait("race", i+1)))
	}
	for _, r := range got {
		if r.Status != messages.StatusSent || r.RequestID != first.RequestID {
			t.Errorf("result %+v, want sent with request_id %s", r, first.RequestID)
		}
	}
	if n := a.sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends, want 1", n)
	}
}

func TestInvalidJobIsAnsweredAndAckedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	results := h.collect(h.subj.ResultsVerify)
	h.publishJob(h.subj.JobsVerify, []byte(`{"request_id":"short","received_code":"1234","correlation_id":"bad"}`), nil)
	res := verifyResult(t, results.wait("bad", 1))
	if res.Status != messages.StatusFailed || res.Error == nil || res.Error.Code != messages.CodeInvalidRequestID || res.Error.Retryable {
		t.Errorf("result = %+v, want failed invalid_request_id, not retryable", res)
	}
	h.waitDrained()
	if info := h.consumerInfo(); info.NumRedelivered != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer redelivered %d, ack pending %d; want 0 and 0", info.NumRedelivered, info.NumAckPending)
	}
	if n := results.count("bad"); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
	if s := h.sim.Stats(); s.VerifySMS != 0 {
		t.Errorf("iDenfy got %d verifies, want 0", s.VerifySMS)
	}
}

func TestJobOlderThanMaxAgeExpires(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart(), withConfig(func(c *worker.Config) { c.JobMaxAge = 5 * time.Minute }))
	results := h.collect(h.subj.ResultsSend)
	h.createStream(jetstream.StreamConfig{Storage: jetstream.FileStorage})
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "old"}, nil)
	h.clock.Advance(6 * time.Minute)
	h.start()
	res := sendResult(t, results.wait("old", 1))
	if res.Error == nil || res.Error.Code != messages.CodeExpired || !res.Error.Retryable {
		t.Errorf("result = %+v, want failed expired, retryable", res)
	}
	if n := h.sim.Stats().SendSMS; n != 0 {
		t.Errorf("iDenfy got %d sends, want 0", n)
	}
	h.waitDrained()
}

func TestVerifyJobsRememberSuccess(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	requestID, code := h.sendCode("+12025550163")
	results := h.collect(h.subj.ResultsVerify)
	job := messages.VerifyRequest{RequestID: requestID, ReceivedCode: code, CorrelationID: "v"}
	h.publishJob(h.subj.JobsVerify, job, header(messages.HeaderMsgID, "v-1"))
	h.publishJob(h.subj.JobsVerify, job, header(messages.HeaderMsgID, "v-2"))
	first := verifyResult(t, results.wait("v", 1))
	second := verifyResult(t, results.wait("v", 2))
	if first.Status != messages.StatusVerified || second.Status != messages.StatusVerified {
		t.Errorf("results = %+v, %+v; want verified twice", first, second)
	}
	if n := h.sim.Stats().VerifySMS; n != 1 {
		t.Errorf("iDenfy got %d verifies, want 1 (the second from memory)", n)
	}
	// A different code still goes to iDenfy, which refuses it.
	wrong := fmt.Sprintf("%04d", (atoi(code)+1)%10000)
	h.publishJob(h.subj.JobsVerify, messages.VerifyRequest{RequestID: requestID, ReceivedCode: wrong, CorrelationID: "w"}, nil)
	if res := verifyResult(t, results.wait("w", 1)); res.Status != messages.StatusRejected {
		t.Errorf("wrong code = %+v, want rejected", res)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// An outage longer than one retry budget hands the job back to be tried
// again later; the attempts of every delivery add up in the result.
func TestJobRetriedLaterAfterAnOutage(t *testing.T) {
	t.Parallel()
	h := newHarness(t,
		withConfig(func(c *worker.Config) { c.RetryMaxElapsed = time.Second }),
		withWorkerOptions(worker.WithJobRetryDelay(50*time.Millisecond)))
	results := h.collect(h.subj.ResultsSend)
	if err := h.sim.InjectFault(idenfytest.Fault{Status: 503, Count: 6}); err != nil {
		t.Fatal(err)
	}
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "later"}, header(messages.HeaderMsgID, "later-1"))
	res := sendResult(t, results.wait("later", 1))
	calls := h.sim.Stats().SendSMS
	if res.Status != messages.StatusSent || res.PossibleDuplicate || int64(res.Attempts) != calls || calls != 7 {
		t.Errorf("result = %+v after %d iDenfy calls, want sent after 7 attempts, no possible duplicate", res, calls)
	}
	if n := h.metric("idenfy_worker_jobs_handed_back_total", "operation", "send"); n != 2 {
		t.Errorf("the job was handed back %v times, want 2 (one per exhausted budget)", n)
	}
	if n := results.count("later"); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
}

// On its last delivery a job is answered, never handed back: handing it
// back would strand it in the stream.
func TestJobOnLastDeliveryIsAnswered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart(),
		withConfig(func(c *worker.Config) { c.RetryMaxElapsed = time.Second }),
		withWorkerOptions(worker.WithJobRetryDelay(50*time.Millisecond)))
	h.createStream(jetstream.StreamConfig{Storage: jetstream.FileStorage})
	h.createConsumer(jetstream.ConsumerConfig{MaxDeliver: 2, AckWait: 30 * time.Second})
	h.start()
	results := h.collect(h.subj.ResultsSend)
	if err := h.sim.InjectFault(idenfytest.Fault{Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "last"}, nil)
	res := sendResult(t, results.wait("last", 1))
	if res.Error == nil || res.Error.Code != messages.CodeUpstreamUnavailable || !res.Error.Retryable {
		t.Errorf("result = %+v, want failed upstream_unavailable, retryable", res)
	}
	h.waitDrained()
	if n := h.metric("idenfy_worker_jobs_handed_back_total", "operation", "send"); n != 1 {
		t.Errorf("the job was handed back %v times, want 1, then answered on its last delivery", n)
	}
}

// An operator's stream and consumer are used as they are, never replaced or
// narrowed.
func TestExistingStreamAndConsumerAreKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart())
	h.createStream(jetstream.StreamConfig{Duplicates: time.Second, MaxMsgs: 1000, Storage: jetstream.FileStorage, Description: "ops"})
	h.createConsumer(jetstream.ConsumerConfig{AckWait: 45 * time.Second, MaxDeliver: 7, MaxAckPending: 33, FilterSubject: h.subj.Jobs})
	h.start()
	results := h.collect(h.subj.ResultsSend)
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "ops"}, nil)
	if res := sendResult(t, results.wait("ops", 1)); res.Status != messages.StatusSent {
		t.Errorf("result = %+v, want sent", res)
	}
	s := h.streamInfo().Config
	if s.Duplicates != time.Second || s.MaxMsgs != 1000 || s.Description != "ops" {
		t.Errorf("stream config changed: %+v", s)
	}
	c := h.consumerInfo().Config
	if c.AckWait != 45*time.Second || c.MaxDeliver != 7 || c.MaxAckPending != 33 {
		t.Errorf("consumer config changed: AckWait %v, MaxDeliver %d, MaxAckPending %d", c.AckWait, c.MaxDeliver, c.MaxAckPending)
	}
}

// An operator deletes the consumer under a running worker: the worker sets
// it up again and goes on consuming.
func TestConsumerDeletedUnderTheWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	results := h.collect(h.subj.ResultsSend)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.js.DeleteConsumer(ctx, worker.DefaultStream, worker.DefaultConsumer); err != nil {
		t.Fatal(err)
	}
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "again"}, nil)
	if res := sendResult(t, results.wait("again", 1)); res.Status != messages.StatusSent {
		t.Errorf("result = %+v, want sent", res)
	}
}

// Nothing kept in JetStream holds a phone number or a code in clear.
func TestStoreHoldsNoNumbersOrCodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.SendLimits = worker.DefaultSendLimits }))
	phone := "+12025550163"
	requestID, code := h.sendCode(phone)
	h.send(messages.SendRequest{PhoneNumber: phone}, header(messages.HeaderMsgID, "k-1"))
	h.verify(messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, header(messages.HeaderMsgID, "k-2"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seen := 0
	for _, bucket := range []string{worker.DefaultBucket, worker.DefaultBucket + "_limits"} {
		kv, err := h.js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			e, err := kv.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			seen++
			for _, secret := range []string{phone, phone[1:], phone[len(phone)-7:], `"` + code + `"`, code + "\""} {
				if strings.Contains(k, secret) || strings.Contains(string(e.Value()), secret) {
					t.Errorf("%s key %s = %s holds %q", bucket, k, e.Value(), secret)
				}
			}
		}
	}
	// Two idempotency records, verify memory, and the counter: at least 4.
	if seen < 4 {
		t.Errorf("read %d keys, want at least 4", seen)
	}
}

// A call that outlasts the ack wait and the lease is kept alive by
// in-progress acks and lease renewals: the job is neither redelivered nor
// taken over, and the user is texted once.
func TestLongCallKeepsItsJobAndClaim(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart(), withWallClock(), withAttemptTimeout(10*time.Second),
		withWorkerOptions(worker.WithLease(time.Second)))
	h.createStream(jetstream.StreamConfig{Storage: jetstream.FileStorage})
	h.createConsumer(jetstream.ConsumerConfig{AckWait: time.Second, MaxDeliver: 5})
	h.start()
	// A second worker would take the job or the claim over if either lapsed.
	newHarness(t, sharing(h), withWallClock(), withWorkerOptions(worker.WithLease(time.Second)))
	results := h.collect(h.subj.ResultsSend)
	if err := h.sim.InjectFault(idenfytest.Fault{Latency: "3s"}); err != nil {
		t.Fatal(err)
	}
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "long"}, header(messages.HeaderMsgID, "long-1"))
	res := sendResult(t, results.wait("long", 1))
	if res.Status != messages.StatusSent || res.PossibleDuplicate || res.Attempts != 1 {
		t.Errorf("result = %+v, want sent after 1 attempt, no possible duplicate", res)
	}
	h.waitDrained()
	if n := h.sim.Stats().SendSMS; n != 1 {
		t.Errorf("iDenfy got %d sends, want 1", n)
	}
	if n := results.count("long"); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
}

// An idempotency record deleted by hand leaves a delete marker in its
// place: the key is claimed over it, as if new.
func TestIdempotencyKeyDeletedByHand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	req := messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "again"}
	first := h.send(req, header(messages.HeaderMsgID, "deleted-1"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, worker.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "send.") {
			if err := kv.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
	}
	if deleted != 1 {
		t.Fatalf("deleted %d idempotency records, want 1", deleted)
	}
	second := h.send(req, header(messages.HeaderMsgID, "deleted-1"))
	if first.Status != messages.StatusSent || second.Status != messages.StatusSent || second.RequestID == first.RequestID {
		t.Errorf("sends = %+v then %+v, want two sent with different request_ids", first, second)
	}
	if n := h.sim.Stats().SendSMS; n != 2 {
		t.Errorf("iDenfy got %d sends, want 2", n)
	}
}

// A job whose last delivery goes unanswered (here: taken by a client that
// never acks, as a worker that died would) is answered from JetStream's
// max-deliveries advisory and removed, rather than stranded in the stream.
func TestJobThatUsedUpItsDeliveriesIsAnswered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withoutStart())
	h.createStream(jetstream.StreamConfig{Storage: jetstream.FileStorage})
	h.createConsumer(jetstream.ConsumerConfig{MaxDeliver: 1, AckWait: 500 * time.Millisecond})
	results := h.collect(h.subj.ResultsSend)
	replies := h.subscribe("signup.replies.7")
	h.publishJob(h.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "stranded"},
		header(messages.HeaderReplyTo, "signup.replies.7"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := h.js.Consumer(ctx, worker.DefaultStream, worker.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := <-batch.Messages(); !ok {
		t.Fatalf("the job was not delivered: %v", batch.Error())
	}
	h.start() // the job's only delivery is taken and will never be acked

	res := sendResult(t, results.wait("stranded", 1))
	if res.Error == nil || res.Error.Code != messages.CodeUpstreamUnavailable || !res.Error.Retryable {
		t.Errorf("result = %+v, want failed upstream_unavailable, retryable", res)
	}
	if reply := next(t, replies); len(reply.Data) == 0 {
		t.Error("nothing on the job's Reply-To")
	}
	h.waitDrained()
	if n := h.sim.Stats().SendSMS; n != 0 {
		t.Errorf("iDenfy got %d sends, want 0", n)
	}
}

// Duplicates racing inside one worker: many concurrent requests with the
// same Nats-Msg-Id make one call upstream and get one answer, and many
// concurrent verifies of one request_id with the right code are all
// verified after one call.
func TestConcurrentDuplicatesInOneWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const keys, copies = 40, 6
	var wg sync.WaitGroup
	ids := make([][]string, keys)
	var mu sync.Mutex
	for k := range keys {
		for range copies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := messages.SendRequest{PhoneNumber: fmt.Sprintf("+1202555%04d", k)}
				res := h.send(req, header(messages.HeaderMsgID, fmt.Sprint("same-", k)))
				mu.Lock()
				ids[k] = append(ids[k], res.RequestID)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for k, got := range ids {
		for _, id := range got {
			if id == "" || id != got[0] {
				t.Errorf("key %d answered request_ids %q, want one and the same", k, got)
				break
			}
		}
	}
	if n := h.sim.Stats().SendSMS; n != keys {
		t.Errorf("iDenfy got %d sends for %d keys, want %d", n, keys, keys)
	}

	requestID, code := h.sendCode("+447700900123")
	before := h.sim.Stats().VerifySMS
	statuses := make(chan messages.Status, copies)
	for range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- h.verify(messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, nil).Status
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != messages.StatusVerified {
			t.Errorf("a concurrent verify of the right code = %s, want verified", s)
		}
	}
	if n := h.sim.Stats().VerifySMS - before; n != 1 {
		t.Errorf("iDenfy got %d verifies, want 1", n)
	}
}

// A retryable failure is not a key's final outcome: the same Nats-Msg-Id
// asked again once the outage is over is tried again.
func TestRetryableFailureDoesNotStickToItsKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.RetryMaxElapsed = time.Second }))
	if err := h.sim.InjectFault(idenfytest.Fault{Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	req := messages.SendRequest{PhoneNumber: "+12025550163"}
	first := h.send(req, header(messages.HeaderMsgID, "outage-1"))
	if first.Error == nil || first.Error.Code != messages.CodeUpstreamUnavailable || !first.Error.Retryable {
		t.Fatalf("send during the outage = %+v, want retryable upstream_unavailable", first)
	}
	h.sim.ClearFaults()
	before := h.sim.Stats().SendSMS
	second := h.send(req, header(messages.HeaderMsgID, "outage-1"))
	if second.Status != messages.StatusSent || h.sim.Stats().SendSMS != before+1 {
		t.Errorf("the same key after the outage = %+v after %d more calls, want sent after 1", second, h.sim.Stats().SendSMS-before)
	}
}

// A stream made again starts its sequences over: a job without Nats-Msg-Id
// in the new stream is not mistaken for the old stream's job of the same
// sequence.
func TestJobsWithoutMsgIDInARecreatedStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	results := h.collect(h.subj.ResultsSend)
	job := messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "first"}
	h.publishJob(h.subj.JobsSend, job, nil)
	first := sendResult(t, results.wait("first", 1))
	h.waitDrained()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.js.DeleteStream(ctx, worker.DefaultStream); err != nil {
		t.Fatal(err)
	}
	// The worker makes the stream and its consumer again.
	waitFor(t, "the stream to be made again", func() bool {
		_, err := h.js.Consumer(ctx, worker.DefaultStream, worker.DefaultConsumer)
		return err == nil
	})
	job.CorrelationID = "second"
	if ack := h.publishJob(h.subj.JobsSend, job, nil); ack.Sequence != 1 {
		t.Fatalf("the new stream's first job has sequence %d, want 1", ack.Sequence)
	}
	second := sendResult(t, results.wait("second", 1))
	if first.Status != messages.StatusSent || second.Status != messages.StatusSent || second.RequestID == first.RequestID {
		t.Errorf("results = %+v, %+v; want two sends with two request_ids", first, second)
	}
	if n := h.sim.Stats().SendSMS; n != 2 {
		t.Errorf("iDenfy got %d sends, want 2", n)
	}
}
