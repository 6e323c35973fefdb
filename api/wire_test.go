package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/clocktest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// TestWorkerMessagesMatchDocument runs real workers (embedded NATS, the
// simulator over HTTP) into every result and failure they produce today,
// captures what they publish, and checks each payload and header against the
// document: the body against its message's schema, the error's code and
// retryable against x-codes, the micro error headers against
// ServiceErrorHeaders and x-service-error-code. The requests it sends are
// checked against their schemas too.
func TestWorkerMessagesMatchDocument(t *testing.T) {
	d := loadDocument(t)
	ns := natstest.RunServer(t, nil)
	clock := clocktest.New(time.Now())
	sim := idenfytest.NewServer(t, idenfytest.WithClock(clock.Now()))
	caller := natstest.Connect(t, ns.ClientURL())

	// The deployment under test uses the default prefix; the others get
	// their own prefix, stream and bucket on the same server.
	main := startWorker(t, ns, sim, "", idenfytest.DefaultAPISecret, worker.Config{
		RetryMaxElapsed:    2 * time.Second,
		AllowedCountries:   []string{"US"},
		SendLimits:         []worker.SendLimit{{Count: 1, Window: time.Hour}},
		BlockedNumberTypes: worker.DefaultBlockedNumberTypes,
		PumpingGuard:       worker.PumpingGuard{N: 3, Window: time.Hour},
	}, worker.WithClock(clock))
	if main.subj.Send != messages.DefaultPrefix+".send" {
		t.Fatalf("the main worker serves %s, want the default prefix", main.subj.Send)
	}
	events := newCollector(t, caller, main.subj.Results)
	c := &checker{t: t, d: d, caller: caller, sim: sim}

	requestID, code := c.sendCode(main, "+12025550101")
	c.request(main, "rejected", opVerify, fmt.Sprintf(`{"request_id":%q,"received_code":%q,"correlation_id":"c-rejected"}`, requestID, wrongCode(code)), "")
	c.request(main, "verified", opVerify, fmt.Sprintf(`{"request_id":%q,"received_code":%q,"correlation_id":"c-verified"}`, requestID, code), "")

	c.request(main, "invalid_request", opSend, `not JSON`, messages.CodeInvalidRequest)
	c.request(main, "invalid_request (wrong type)", opVerify, `{"request_id":5,"received_code":"1234","correlation_id":"c-type"}`, messages.CodeInvalidRequest)
	c.request(main, "invalid_phone_number", opSend, `{"phone_number":"12025550163","correlation_id":"c-phone"}`, messages.CodeInvalidPhoneNumber)
	c.request(main, "invalid_sender_name", opSend, `{"phone_number":"+12025550102","sender_name":"Far too long a name"}`, messages.CodeInvalidSenderName)
	c.request(main, "invalid_request_id", opVerify, `{"request_id":"short","received_code":"1234"}`, messages.CodeInvalidRequestID)
	c.request(main, "invalid_code", opVerify, fmt.Sprintf(`{"request_id":%q,"received_code":"12a4"}`, requestID), messages.CodeInvalidCode)
	c.request(main, "country_not_allowed", opSend, `{"phone_number":"+37060012345","correlation_id":"c-country"}`, messages.CodeCountryNotAllowed)
	c.request(main, "too_many_sends", opSend, `{"phone_number":"+12025550101","correlation_id":"c-limit"}`, messages.CodeTooManySends)
	c.request(main, "number_not_allowed", opSend, `{"phone_number":"+19005550123","correlation_id":"c-premium"}`, messages.CodeNumberNotAllowed)
	// Three sends nobody verifies pause their range (+12025551, apart from
	// the verified one above): the next is refused.
	for i := range 3 {
		c.request(main, "pumped send", opSend, fmt.Sprintf(`{"phone_number":"+1202555120%d"}`, i), "")
	}
	c.request(main, "suspected_fraud", opSend, `{"phone_number":"+12025551209","correlation_id":"c-pumping"}`, messages.CodeSuspectedFraud)

	faults := []struct {
		name  string
		fault idenfytest.Fault
		phone string
		code  messages.Code
	}{
		{name: "quota_exhausted", fault: idenfytest.Fault{Status: 402}, phone: "+12025550103", code: messages.CodeQuotaExhausted},
		{name: "upstream_rejected", fault: idenfytest.Fault{Status: 400}, phone: "+12025550104", code: messages.CodeUpstreamRejected},
		{name: "rate_limited", fault: idenfytest.Fault{Status: 429, Count: 1000}, phone: "+12025550105", code: messages.CodeRateLimited},
		{name: "upstream_unavailable", fault: idenfytest.Fault{Status: 503, Count: 1000}, phone: "+12025550106", code: messages.CodeUpstreamUnavailable},
	}
	for _, f := range faults {
		inject(t, sim, f.fault)
		c.request(main, f.name, opSend, fmt.Sprintf(`{"phone_number":%q,"correlation_id":"c-%s"}`, f.phone, f.name), f.code)
		sim.ClearFaults()
	}

	// A 500 may have been processed, so the false that follows cannot be
	// trusted.
	requestID, code = c.sendCode(main, "+12025550107")
	inject(t, sim, idenfytest.Fault{Status: 500})
	c.request(main, "outcome_unknown", opVerify, fmt.Sprintf(`{"request_id":%q,"received_code":%q}`, requestID, wrongCode(code)), messages.CodeOutcomeUnknown)

	// A send after a 500 may have texted the user twice.
	inject(t, sim, idenfytest.Fault{Status: 500})
	var dup messages.SendResult
	body := c.request(main, "sent, possible duplicate", opSend, `{"phone_number":"+12025550112"}`, "")
	if err := json.Unmarshal(body, &dup); err != nil || !dup.PossibleDuplicate {
		t.Errorf("send after a 500 = %s, want possible_duplicate", body)
	}

	// Jobs: the result comes on Reply-To (and on the results subjects).
	c.job(main, "job sent", opSend, `{"phone_number":"+12025550108","correlation_id":"c-job"}`, "job-send-1", "")
	code = c.lastCode("+12025550108")
	requestID = c.lastRequestID
	c.job(main, "job verified", opVerify, fmt.Sprintf(`{"request_id":%q,"received_code":%q}`, requestID, code), "job-verify-1", "")
	// Last, since it moves the main worker's clock past the job max age.
	clock.Advance(worker.DefaultJobMaxAge + time.Minute)
	c.job(main, "job expired", opSend, `{"phone_number":"+12025550109","correlation_id":"c-expired"}`, "job-expired-1", messages.CodeExpired)

	creds := startWorker(t, ns, sim, "creds", "not-the-secret", worker.Config{}, worker.WithClock(clock))
	c.request(creds, "unauthorized", opSend, `{"phone_number":"+12025550110"}`, messages.CodeUnauthorized)

	c.shuttingDown(ns)

	// Every answer of the main worker was also published as an event.
	for _, ev := range events.wait(c.mainAnswers) {
		message := "SendResult"
		if ev.Subject == main.subj.ResultsVerify {
			message = "VerifyResult"
		}
		if err := d.validate(t, "/components/messages/"+message+"/payload", ev.Data); err != nil {
			t.Errorf("event on %s %s: not a %s of the document: %v", ev.Subject, ev.Data, message, err)
		}
	}
	if len(c.seen) == 0 {
		t.Fatal("nothing captured")
	}
	for _, code := range messages.Codes {
		if !c.seen[code] && !notProducedYet[code] {
			t.Errorf("no %s captured: add a case that makes the worker produce it", code)
		}
	}
}

// notProducedYet are codes of the contract the worker does not produce
// today; the drift tests cover them in the document all the same.
var notProducedYet = map[messages.Code]bool{}

type operation string

const (
	opSend   operation = "send"
	opVerify operation = "verify"
)

// names of the document's messages for an operation.
func (op operation) names() (request, job, result, failure string) {
	if op == opVerify {
		return "VerifyRequest", "VerifyJob", "VerifyResult", "VerifyFailure"
	}
	return "SendRequest", "SendJob", "SendResult", "SendFailure"
}

// deployment is one worker with its subjects.
type deployment struct {
	w    *worker.Worker
	subj messages.Subjects
	main bool
}

func (dep *deployment) subject(op operation, job bool) string {
	switch {
	case job && op == opVerify:
		return dep.subj.JobsVerify
	case job:
		return dep.subj.JobsSend
	case op == opVerify:
		return dep.subj.Verify
	}
	return dep.subj.Send
}

// startWorker starts a worker on ns calling sim with apiSecret. An empty
// name is the default prefix, stream and bucket; otherwise name prefixes
// them all.
func startWorker(t *testing.T, ns *server.Server, sim *idenfytest.Server, name, apiSecret string, cfg worker.Config, opts ...worker.Option) *deployment {
	t.Helper()
	client, err := idenfy.NewClient(idenfy.Config{
		BaseURL:   sim.URL,
		APIKey:    idenfytest.DefaultAPIKey,
		APISecret: apiSecret,
	}, idenfy.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if name != "" {
		cfg.Prefix = name + "." + messages.DefaultPrefix
		cfg.Stream = name + "_JOBS"
		cfg.ResultsStream = name + "_RESULTS"
		cfg.Bucket = name + "_phone"
	}
	cfg.Conn = natstest.Connect(t, ns.ClientURL())
	cfg.Client = client
	cfg.HashKey = []byte("api test hash key")
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	w, err := worker.New(cfg, opts...)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatalf("worker.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = messages.DefaultPrefix
	}
	return &deployment{w: w, subj: messages.NewSubjects(prefix), main: name == ""}
}

// checker sends requests and jobs and checks what comes back against the
// document.
type checker struct {
	t      *testing.T
	d      *document
	caller *nats.Conn
	sim    *idenfytest.Server

	seen          map[messages.Code]bool
	mainAnswers   int    // answers of the main worker, each also an event
	lastRequestID string // of the last sent result
}

// request sends payload over request/reply and checks the answer: a result
// when want is empty, else a failure with code want.
func (c *checker) request(dep *deployment, name string, op operation, payload string, want messages.Code) []byte {
	c.t.Helper()
	request, _, _, _ := op.names()
	c.checkRequest(name, request, payload, want)
	msg, err := c.caller.RequestMsg(&nats.Msg{Subject: dep.subject(op, false), Data: []byte(payload)}, 30*time.Second)
	if err != nil {
		c.t.Fatalf("%s: request on %s: %v", name, dep.subject(op, false), err)
	}
	if dep.main {
		c.mainAnswers++
	}
	c.checkAnswer(name, op, msg, want, true)
	return msg.Data
}

// job publishes payload as a job with Nats-Msg-Id msgID and a Reply-To, and
// checks the result that comes on Reply-To.
func (c *checker) job(dep *deployment, name string, op operation, payload, msgID string, want messages.Code) {
	c.t.Helper()
	_, job, _, _ := op.names()
	c.checkRequest(name, job, payload, want)
	replyTo := "caller.replies." + msgID
	sub, err := c.caller.SubscribeSync(replyTo)
	if err != nil {
		c.t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	hdr := nats.Header{}
	hdr.Set(messages.HeaderMsgID, msgID)
	hdr.Set(messages.HeaderReplyTo, replyTo)
	if err := c.d.validate(c.t, "/components/messages/"+job+"/headers", headerJSON(c.t, hdr)); err != nil {
		c.t.Errorf("%s: job headers %v: not the document's %s headers: %v", name, hdr, job, err)
	}
	js, err := jetstream.New(c.caller)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: dep.subject(op, true), Data: []byte(payload), Header: hdr}); err != nil {
		c.t.Fatalf("%s: publishing the job: %v", name, err)
	}
	msg, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		c.t.Fatalf("%s: waiting on Reply-To %s: %v", name, replyTo, err)
	}
	if dep.main {
		c.mainAnswers++
	}
	c.checkAnswer(name, op, msg, want, false)
}

// checkRequest checks that a request payload the worker accepts is valid
// for its message, and that one it refuses (other than JSON gone wrong, or a
// refusal that depends on state) is not.
func (c *checker) checkRequest(name, message, payload string, want messages.Code) {
	c.t.Helper()
	if want == messages.CodeInvalidRequest && !json.Valid([]byte(payload)) {
		return
	}
	err := c.d.validate(c.t, "/components/messages/"+message+"/payload", []byte(payload))
	switch {
	case want.IsInvalidInput() && err == nil:
		c.t.Errorf("%s: payload %s passes the %s schema, but the worker refuses it with %s", name, payload, message, want)
	case !want.IsInvalidInput() && err != nil:
		c.t.Errorf("%s: payload %s fails the %s schema: %v", name, payload, message, err)
	}
}

// checkAnswer checks an answer against the document: a reply to a request
// when replied, else a job's result on its Reply-To subject.
func (c *checker) checkAnswer(name string, op operation, msg *nats.Msg, want messages.Code, replied bool) {
	c.t.Helper()
	_, _, result, failure := op.names()
	message := result
	if want != "" && replied {
		message = failure
	}
	if err := c.d.validate(c.t, "/components/messages/"+message+"/payload", msg.Data); err != nil {
		c.t.Errorf("%s: answer %s is not a %s of the document: %v", name, msg.Data, message, err)
	}
	var res struct {
		Status    messages.Status `json:"status"`
		RequestID string          `json:"request_id"`
		Error     *messages.Error `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		c.t.Fatalf("%s: answer %s: %v", name, msg.Data, err)
	}
	if want == "" {
		if res.Error != nil || res.Status == messages.StatusFailed {
			c.t.Fatalf("%s: answer %s, want a result without error", name, msg.Data)
		}
		c.lastRequestID = res.RequestID
		c.checkNoErrorHeaders(name, msg)
		return
	}
	if res.Error == nil || res.Error.Code != want {
		c.t.Fatalf("%s: answer %s, want a failure with %s", name, msg.Data, want)
	}
	if c.seen == nil {
		c.seen = map[messages.Code]bool{}
	}
	c.seen[want] = true
	if got, wantRetryable := res.Error.Retryable, c.documentedRetryable(want, op); got != wantRetryable {
		c.t.Errorf("%s: answer %s has retryable %v, the document says %v", name, msg.Data, got, wantRetryable)
	}
	if replied {
		c.checkErrorHeaders(name, msg, res.Error)
	} else {
		c.checkNoErrorHeaders(name, msg)
	}
}

// documentedRetryable is the retryable the document gives code for op.
func (c *checker) documentedRetryable(code messages.Code, op operation) bool {
	info := c.d.at(c.t, "/components/schemas/ErrorCode/x-codes/"+string(code))
	if v, ok := info["x-retryable-"+string(op)].(bool); ok {
		return v
	}
	return info["x-retryable"] == true
}

func (c *checker) checkErrorHeaders(name string, msg *nats.Msg, e *messages.Error) {
	c.t.Helper()
	if err := c.d.validate(c.t, "/components/schemas/ServiceErrorHeaders", headerJSON(c.t, msg.Header)); err != nil {
		c.t.Errorf("%s: headers %v are not the document's ServiceErrorHeaders: %v", name, msg.Header, err)
	}
	if got, want := msg.Header.Get(micro.ErrorHeader), string(e.Code)+": "+e.Message; got != want {
		c.t.Errorf("%s: header %s = %q, want %q", name, micro.ErrorHeader, got, want)
	}
	status := c.d.at(c.t, "/components/schemas/ErrorCode/x-codes/"+string(e.Code))["x-service-error-code"]
	n, _ := status.(float64)
	if got, want := msg.Header.Get(micro.ErrorCodeHeader), strconv.Itoa(int(n)); got != want {
		c.t.Errorf("%s: header %s = %q, the document's x-service-error-code of %s is %s", name, micro.ErrorCodeHeader, got, e.Code, want)
	}
}

func (c *checker) checkNoErrorHeaders(name string, msg *nats.Msg) {
	c.t.Helper()
	for _, h := range []string{micro.ErrorHeader, micro.ErrorCodeHeader} {
		if v := msg.Header.Get(h); v != "" {
			c.t.Errorf("%s: header %s = %q on an answer that carries none", name, h, v)
		}
	}
}

// sendCode sends a code to phone and returns its request_id and the code
// the simulator texted.
func (c *checker) sendCode(dep *deployment, phone string) (requestID, code string) {
	c.t.Helper()
	c.request(dep, "sent "+phone, opSend, fmt.Sprintf(`{"phone_number":%q,"sender_name":"Acme","correlation_id":"c-sent"}`, phone), "")
	return c.lastRequestID, c.lastCode(phone)
}

func (c *checker) lastCode(phone string) string {
	c.t.Helper()
	code, ok := c.sim.LastCode(phone)
	if !ok {
		c.t.Fatalf("no code in the outbox of %s", phone)
	}
	return code
}

// shuttingDown asks a worker whose call is waiting between attempts (an
// outage, a long retry budget, the wall clock), shuts it down, and checks
// the shutting_down answer.
func (c *checker) shuttingDown(ns *server.Server) {
	c.t.Helper()
	sim := c.sim
	stop := startWorker(c.t, ns, sim, "stop", idenfytest.DefaultAPISecret, worker.Config{
		RetryMaxElapsed: 10 * time.Minute,
		ShutdownTimeout: 10 * time.Minute,
	})
	inject(c.t, sim, idenfytest.Fault{Status: 503, Count: 1000})
	defer sim.ClearFaults()
	before := sim.Stats().SendSMS
	payload := `{"phone_number":"+12025550111","correlation_id":"c-stop"}`
	c.checkRequest("shutting_down", "SendRequest", payload, messages.CodeShuttingDown)
	answer := make(chan *nats.Msg, 1)
	go func() {
		msg, err := c.caller.RequestMsg(&nats.Msg{Subject: stop.subj.Send, Data: []byte(payload)}, 30*time.Second)
		if err != nil {
			c.t.Errorf("shutting_down: request: %v", err)
		}
		answer <- msg
	}()
	waitFor(c.t, "a first attempt", func() bool { return sim.Stats().SendSMS > before })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stop.w.Shutdown(ctx); err != nil {
		c.t.Errorf("Shutdown: %v", err)
	}
	if msg := <-answer; msg != nil {
		c.checkAnswer("shutting_down", opSend, msg, messages.CodeShuttingDown, true)
	}
}

// headerJSON is a NATS header as the document's header schemas see it: one
// string per name.
func headerJSON(t testing.TB, h nats.Header) []byte {
	t.Helper()
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// collector gathers the messages of a subject.
type collector struct {
	t   *testing.T
	sub *nats.Subscription
}

func newCollector(t *testing.T, nc *nats.Conn, subject string) *collector {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &collector{t: t, sub: sub}
}

// wait returns the first n messages, failing the test if they do not come
// within 30s each.
func (c *collector) wait(n int) []*nats.Msg {
	c.t.Helper()
	msgs := make([]*nats.Msg, 0, n)
	for range n {
		msg, err := c.sub.NextMsg(30 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for result event %d of %d: %v", len(msgs)+1, n, err)
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

func inject(t testing.TB, sim *idenfytest.Server, f idenfytest.Fault) {
	t.Helper()
	if err := sim.InjectFault(f); err != nil {
		t.Fatal(err)
	}
}

// wrongCode is a 4-digit code other than code.
func wrongCode(code string) string {
	if code == "0000" {
		return "1111"
	}
	return "0000"
}

// waitFor polls cond until it holds, failing the test after 30s; it
// asserts nothing about how long that takes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
