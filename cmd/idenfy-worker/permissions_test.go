package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The permissions of deploy/nats-server.conf are held to the product here:
// the server runs that very file, the production worker connects as its
// worker user (through connectNATS) and a service as its caller user, and
// every feature is used without one permission violation, on the worker's,
// the caller's or the server's side. When a feature needs a subject the set
// lacks, these tests say which. And the worker's set is no wider than that:
// another service's subjects, other clients' inboxes, stream deletes and
// other buckets stay out of its reach.
//
// The config reads the passwords from the environment (t.Setenv): these
// tests do not run in parallel.

// deployment is what a permission set is written for: a worker's names and
// the users of its workers and callers.
type deployment struct {
	name                   string
	prefix, stream, bucket string
	results                string // the results stream
	workerUser, callerUser string
	workerPassword         string
	callerPassword         string
}

// deployments are the sets of deploy/nats-server.conf: the default names
// (IDENFY_WORKER_PERMISSIONS) and the sandbox of docker-compose.yml.
var deployments = []deployment{
	{
		name:   "default",
		prefix: messages.DefaultPrefix, stream: worker.DefaultStream, bucket: worker.DefaultBucket,
		results:    "IDENFY_PHONE_RESULTS",
		workerUser: "idenfy-worker", workerPassword: natsPasswords["NATS_WORKER_PASSWORD"],
		callerUser: "idenfy-caller", callerPassword: natsPasswords["NATS_CALLER_PASSWORD"],
	},
	{
		name:   "sandbox",
		prefix: "sandbox.idenfy.phone", stream: "SANDBOX_IDENFY_PHONE_JOBS", bucket: "sandbox_idenfy_phone",
		results:    "SANDBOX_IDENFY_PHONE_RESULTS",
		workerUser: "idenfy-sandbox-worker", workerPassword: natsPasswords["NATS_SANDBOX_WORKER_PASSWORD"],
		callerUser: "idenfy-sandbox-caller", callerPassword: natsPasswords["NATS_SANDBOX_CALLER_PASSWORD"],
	},
}

const (
	// permForeign is another service's subject, a Reply-To the worker may
	// not publish to.
	permForeign = "payments.commands"
	// observerUser may do anything: added by the tests to look at JetStream
	// and at other services' subjects, it is not in the config.
	observerUser     = "test-observer"
	observerPassword = "0bserverTestPassw0rd"
)

// serverViolations records the permission violations the server logs.
type serverViolations struct {
	mu    sync.Mutex
	lines []string
}

func (l *serverViolations) record(format string, v ...any) {
	if line := fmt.Sprintf(format, v...); strings.Contains(line, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, line)
		l.mu.Unlock()
	}
}

func (l *serverViolations) Noticef(format string, v ...any) { l.record(format, v...) }
func (l *serverViolations) Warnf(format string, v ...any)   { l.record(format, v...) }
func (l *serverViolations) Fatalf(format string, v ...any)  { l.record(format, v...) }
func (l *serverViolations) Errorf(format string, v ...any)  { l.record(format, v...) }
func (l *serverViolations) Debugf(format string, v ...any)  { l.record(format, v...) }
func (l *serverViolations) Tracef(format string, v ...any)  { l.record(format, v...) }

func (l *serverViolations) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// startConfiguredNATS runs deploy/nats-server.conf with its users and
// permissions as they are, on this machine's terms: loopback, a random
// port, no monitoring port, the JetStream store in a temporary directory.
// The observer user is added.
func startConfiguredNATS(t *testing.T) (*server.Server, *serverViolations) {
	t.Helper()
	setNATSPasswords(t)
	opts, err := server.ProcessConfigFile(natsConfigPath)
	if err != nil {
		t.Fatalf("%s: %v", natsConfigPath, err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0
	opts.StoreDir = t.TempDir()
	opts.Cluster = server.ClusterOpts{}
	opts.Users = append(opts.Users, &server.User{Username: observerUser, Password: observerPassword})
	ns := natstest.RunServer(t, opts)
	log := &serverViolations{}
	ns.SetLogger(log, false, false)
	return ns, log
}

// natsURLAs is the server's URL with a user's credentials in it, as
// docker-compose.yml gives NATS_URL to a worker.
func natsURLAs(ns *server.Server, user, password string) string {
	return strings.Replace(ns.ClientURL(), "nats://", "nats://"+user+":"+password+"@", 1)
}

// asyncErrors collects what a connection's error handler receives.
type asyncErrors struct {
	mu   sync.Mutex
	errs []error
	ch   chan error
}

func (a *asyncErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	a.mu.Unlock()
	select {
	case a.ch <- err:
	default:
	}
}

func (a *asyncErrors) all() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// connectAs connects as user, recording every asynchronous error, closed by
// t.Cleanup.
func connectAs(t *testing.T, ns *server.Server, user, password string, opts ...nats.Option) (*nats.Conn, *asyncErrors) {
	t.Helper()
	errs := &asyncErrors{ch: make(chan error, 64)}
	opts = append([]nats.Option{nats.UserInfo(user, password), nats.ErrorHandler(errs.handler)}, opts...)
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// permissionsRun is the product under the config's users: a worker and the
// simulator, a caller, and an observer.
type permissionsRun struct {
	d          deployment
	ns         *server.Server
	violations *serverViolations
	sim        *idenfytest.Server
	worker     *runningWorker
	caller     *nats.Conn
	callerErrs *asyncErrors
	callerJS   jetstream.JetStream
	observerJS jetstream.JetStream
	observer   *nats.Conn
	subj       messages.Subjects
	results    chan *nats.Msg
}

// startPermissionsRun starts the server from the config, then prepare (with
// the observer's connection; may be nil), then the production worker of d
// connected as its worker user, and waits until it is ready.
func startPermissionsRun(t *testing.T, d deployment, prepare func(js jetstream.JetStream)) *permissionsRun {
	t.Helper()
	r := &permissionsRun{d: d, subj: messages.NewSubjects(d.prefix)}
	r.ns, r.violations = startConfiguredNATS(t)
	t.Cleanup(func() {
		// A feature that fails for a missing permission fails at its own
		// step: name the subject the server refused.
		if t.Failed() {
			for _, line := range r.violations.all() {
				t.Logf("server: %s", line)
			}
		}
	})
	r.observer, _ = connectAs(t, r.ns, observerUser, observerPassword)
	var err error
	if r.observerJS, err = jetstream.New(r.observer); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(r.observerJS)
	}
	r.sim = idenfytest.NewServer(t, idenfytest.WithCredentials(testAPIKey, testAPISecret))
	env := workerEnv(natsURLAs(r.ns, d.workerUser, d.workerPassword), r.sim.URL)
	env["WORKER_SUBJECT_PREFIX"], env["WORKER_STREAM"], env["WORKER_KV_BUCKET"] = d.prefix, d.stream, d.bucket
	env["WORKER_RESULTS_STREAM"] = d.results
	r.worker = startWorker(t, env)
	waitStatus(t, r.worker.metrics+"/readyz", http.StatusOK)

	r.caller, r.callerErrs = connectAs(t, r.ns, d.callerUser, d.callerPassword)
	if r.callerJS, err = jetstream.New(r.caller); err != nil {
		t.Fatal(err)
	}
	r.results = make(chan *nats.Msg, 256)
	if _, err := r.caller.ChanSubscribe(r.subj.Results, r.results); err != nil {
		t.Fatal(err)
	}
	if err := r.caller.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// publishJob publishes a job as the caller and waits for its JetStream ack.
func (r *permissionsRun) publishJob(t *testing.T, subject string, payload any, header nats.Header) *jetstream.PubAck {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	ack, err := r.callerJS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: header})
	if err != nil {
		t.Fatalf("publishing a job on %s: %v", subject, err)
	}
	return ack
}

// result waits for the result event on subject with correlationID.
func (r *permissionsRun) result(t *testing.T, subject, correlationID string) []byte {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case m := <-r.results:
			var res struct {
				CorrelationID string `json:"correlation_id"`
			}
			if m.Subject == subject && json.Unmarshal(m.Data, &res) == nil && res.CorrelationID == correlationID {
				return m.Data
			}
		case <-timeout:
			t.Fatalf("no result on %s for correlation_id %q; worker logs:\n%s", subject, correlationID, r.worker.logs.String())
		}
	}
}

// jobsSettled waits until the jobs consumer holds nothing, and checks that
// no job was delivered twice.
func (r *permissionsRun) jobsSettled(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	cons, err := r.observerJS.Consumer(ctx, r.d.stream, worker.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatalf("jobs consumer info: %v", err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			if info.NumRedelivered != 0 {
				t.Errorf("jobs consumer: %d jobs redelivered, want none", info.NumRedelivered)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("jobs consumer still holds jobs: %d pending, %d unacked", info.NumPending, info.NumAckPending)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// workerViolations are the lines of the worker's log that report a NATS
// permissions violation.
func (r *permissionsRun) workerViolations() []string {
	var out []string
	for _, line := range strings.Split(r.worker.logs.String(), "\n") {
		if strings.Contains(strings.ToLower(line), "permissions violation") {
			out = append(out, line)
		}
	}
	return out
}

// stopAndCheck stops the worker, as SIGTERM does (its shutdown uses NATS
// too), then checks that neither the worker, the caller nor the server saw
// a permissions violation.
func (r *permissionsRun) stopAndCheck(t *testing.T) {
	t.Helper()
	if err := r.worker.stop(t); err != nil {
		t.Errorf("run after SIGTERM = %v, want nil", err)
	}
	// A violation reaches the client after the server read the message
	// that caused it: a round trip lets the caller's arrive.
	if err := r.caller.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, line := range r.workerViolations() {
		t.Errorf("worker: %s", line)
	}
	for _, err := range r.callerErrs.all() {
		t.Errorf("caller: %v", err)
	}
	for _, line := range r.violations.all() {
		t.Errorf("server: %s", line)
	}
}

// TestPermissions runs every feature of the worker under the config's
// users: request/reply send and verify, a verify asked again (verify
// memory), jobs and their results, a duplicate (idempotency), the send
// limit reached (guard counters), micro discovery, and a durable results
// consumer of the caller's where the results stream exists. No permission
// is missing: nothing is refused.
func TestPermissions(t *testing.T) {
	for _, d := range deployments {
		t.Run(d.name, func(t *testing.T) { checkPermissions(t, d) })
	}
}

func checkPermissions(t *testing.T, d deployment) {
	r := startPermissionsRun(t, d, nil)
	subj := r.subj

	// Request/reply, and the verify memory.
	const phone = "+12025550163"
	sent := request[messages.SendResult](t, r.caller, subj.Send, messages.SendRequest{PhoneNumber: phone, CorrelationID: "perm-send"})
	if sent.Status != messages.StatusSent || sent.RequestID == "" {
		t.Fatalf("send = %+v, want sent", sent)
	}
	r.result(t, subj.ResultsSend, "perm-send")
	code, ok := r.sim.LastCode(phone)
	if !ok {
		t.Fatalf("the simulator texted nothing to %s", phone)
	}
	for i, correlation := range []string{"perm-verify", "perm-verify-again"} {
		got := request[messages.VerifyResult](t, r.caller, subj.Verify, messages.VerifyRequest{RequestID: sent.RequestID, ReceivedCode: code, CorrelationID: correlation})
		if got.Status != messages.StatusVerified || !got.IsVerified {
			t.Fatalf("verify #%d = %+v, want verified", i+1, got)
		}
		r.result(t, subj.ResultsVerify, correlation)
	}
	if calls := r.sim.Stats().VerifySMS; calls != 1 {
		t.Errorf("iDenfy verify calls = %d, want 1: the second verify is answered from the verify memory", calls)
	}

	// Jobs, and a duplicate on the other intake: answered from the store.
	const jobPhone = "+447700900123"
	r.publishJob(t, subj.JobsSend, messages.SendRequest{PhoneNumber: jobPhone, CorrelationID: "perm-job"},
		nats.Header{messages.HeaderMsgID: []string{"perm-job-1"}})
	var jobSent messages.SendResult
	if err := json.Unmarshal(r.result(t, subj.ResultsSend, "perm-job"), &jobSent); err != nil || jobSent.Status != messages.StatusSent {
		t.Fatalf("send job result = %+v (%v), want sent", jobSent, err)
	}
	if ack := r.publishJob(t, subj.JobsSend, messages.SendRequest{PhoneNumber: jobPhone, CorrelationID: "perm-job"},
		nats.Header{messages.HeaderMsgID: []string{"perm-job-1"}}); !ack.Duplicate {
		t.Errorf("the same job again: ack %+v, want a duplicate", ack)
	}
	sends := r.sim.Stats().SendSMS
	dup := requestMsg[messages.SendResult](t, r.caller, subj.Send, messages.SendRequest{PhoneNumber: jobPhone, CorrelationID: "perm-job"},
		nats.Header{messages.HeaderMsgID: []string{"perm-job-1"}})
	if dup.RequestID != jobSent.RequestID || r.sim.Stats().SendSMS != sends {
		t.Errorf("request with the job's Nats-Msg-Id = %+v, want the job's request_id %s without calling iDenfy", dup, jobSent.RequestID)
	}
	jobCode, ok := r.sim.LastCode(jobPhone)
	if !ok {
		t.Fatalf("the simulator texted nothing to %s", jobPhone)
	}
	r.publishJob(t, subj.JobsVerify, messages.VerifyRequest{RequestID: jobSent.RequestID, ReceivedCode: jobCode, CorrelationID: "perm-job-verify"}, nil)
	var jobVerified messages.VerifyResult
	if err := json.Unmarshal(r.result(t, subj.ResultsVerify, "perm-job-verify"), &jobVerified); err != nil || jobVerified.Status != messages.StatusVerified {
		t.Errorf("verify job result = %+v (%v), want verified", jobVerified, err)
	}

	// The send limit (3 per 10 minutes by default): the guard's counters.
	const limited = "+37060012345"
	for i := range 4 {
		got := request[messages.SendResult](t, r.caller, subj.Send, messages.SendRequest{PhoneNumber: limited})
		switch {
		case i < 3 && got.Status != messages.StatusSent:
			t.Fatalf("send #%d to %s = %+v, want sent", i+1, limited, got)
		case i == 3 && (got.Error == nil || got.Error.Code != messages.CodeTooManySends):
			t.Fatalf("send #%d to %s = %+v, want %s", i+1, limited, got, messages.CodeTooManySends)
		}
	}

	// Micro discovery and stats, as the nats CLI asks them.
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		msg, err := r.caller.Request("$SRV."+verb+"."+messages.ServiceName, nil, waitLimit)
		if err != nil {
			t.Fatalf("$SRV.%s.%s: %v", verb, messages.ServiceName, err)
		}
		var info struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(msg.Data, &info); err != nil || info.Name != messages.ServiceName {
			t.Errorf("$SRV.%s.%s answered %s, want the service %s", verb, messages.ServiceName, msg.Data, messages.ServiceName)
		}
	}

	// A caller's durable consumer on the results stream, where the worker
	// keeps one: an observer that was away reads what it missed.
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if _, err := r.callerJS.Stream(ctx, d.results); errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Logf("no %s stream: this worker keeps no results stream, nothing to consume", d.results)
	} else if err != nil {
		t.Errorf("the caller looking up %s: %v", d.results, err)
	} else {
		cons, err := r.callerJS.CreateOrUpdateConsumer(ctx, d.results, jetstream.ConsumerConfig{
			Durable:       "perm-observer",
			FilterSubject: subj.Results,
			AckPolicy:     jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatalf("the caller creating a durable consumer on %s: %v", d.results, err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(waitLimit))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if err := m.DoubleAck(ctx); err != nil {
				t.Errorf("acking a result: %v", err)
			}
		}
		if n != 1 || batch.Error() != nil {
			t.Errorf("fetched %d results (%v) from %s, want 1", n, batch.Error(), d.results)
		}
	}

	r.jobsSettled(t)
	r.stopAndCheck(t)
}

// requestMsg is request with headers.
func requestMsg[T any](t *testing.T, nc *nats.Conn, subject string, payload any, header nats.Header) T {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: data, Header: header}, waitLimit)
	if err != nil {
		t.Fatalf("request on %s: %v", subject, err)
	}
	var res T
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		t.Fatalf("answer %s on %s: %v", msg.Data, subject, err)
	}
	return res
}

// TestPermissionsReplyToRefused sends a job whose Reply-To is another
// service's subject. The server refuses the worker's publish there; the
// worker logs it, naming the subject, and goes on: the job completes, its
// result reaches the results subject, nothing is redelivered, and the
// connection stays up.
func TestPermissionsReplyToRefused(t *testing.T) {
	r := startPermissionsRun(t, deployments[0], nil)
	foreign, err := r.observer.SubscribeSync(permForeign)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.observer.Flush(); err != nil {
		t.Fatal(err)
	}

	r.publishJob(t, r.subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "perm-reply-to"},
		nats.Header{messages.HeaderReplyTo: []string{permForeign}})
	var res messages.SendResult
	if err := json.Unmarshal(r.result(t, r.subj.ResultsSend, "perm-reply-to"), &res); err != nil || res.Status != messages.StatusSent {
		t.Fatalf("result = %+v (%v), want sent", res, err)
	}

	// The server's refusal reaches the worker's log as one line naming the
	// subject.
	deadline := time.Now().Add(waitLimit)
	var line string
	for line == "" {
		for _, l := range r.workerViolations() {
			var ev map[string]any
			if json.Unmarshal([]byte(l), &ev) == nil && ev["level"] == "error" &&
				strings.Contains(fmt.Sprint(ev["error"]), `Publish to "`+permForeign+`"`) {
				line = l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker's log has no permissions violation naming %s:\n%s", permForeign, r.worker.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("worker: %s", line)
	if got := r.violations.all(); len(got) != 1 || !strings.Contains(got[0], `"`+permForeign+`"`) {
		t.Errorf("server violations = %q, want one, the publish to %s", got, permForeign)
	}
	if m, err := foreign.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("%s received %s from the worker", permForeign, m.Data)
	}

	r.jobsSettled(t)
	// Still connected and serving: NATS does not close a connection over a
	// refused publish.
	if got := request[messages.SendResult](t, r.caller, r.subj.Send, messages.SendRequest{PhoneNumber: "+447700900123"}); got.Status != messages.StatusSent {
		t.Errorf("send after the refused Reply-To = %+v, want sent", got)
	}
	if strings.Contains(r.worker.logs.String(), "NATS disconnected") {
		t.Errorf("the worker's connection dropped:\n%s", r.worker.logs.String())
	}
	for _, err := range r.callerErrs.all() {
		t.Errorf("caller: %v", err)
	}
}

// TestPermissionsStrandedJob answers a job that used up its deliveries
// under the worker's permissions: the advisory, reading the job from the
// stream, the stored outcome, removing the job. The consumer takes verify
// jobs only here, so that a send job stays in the stream as a stranded one
// would; the advisory is the observer's, standing in for JetStream's.
func TestPermissionsStrandedJob(t *testing.T) {
	d := deployments[0]
	subj := messages.NewSubjects(d.prefix)
	r := startPermissionsRun(t, d, func(js jetstream.JetStream) {
		ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: d.stream, Subjects: []string{subj.Jobs}, Retention: jetstream.WorkQueuePolicy,
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateConsumer(ctx, d.stream, jetstream.ConsumerConfig{
			Durable: worker.DefaultConsumer, FilterSubject: subj.JobsVerify, AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			t.Fatal(err)
		}
	})
	ack := r.publishJob(t, subj.JobsSend, messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "perm-stranded"}, nil)
	advisory, _ := json.Marshal(map[string]any{"stream": d.stream, "stream_seq": ack.Sequence, "deliveries": 20})
	if err := r.observer.Publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+d.stream+"."+worker.DefaultConsumer, advisory); err != nil {
		t.Fatal(err)
	}
	var res messages.SendResult
	if err := json.Unmarshal(r.result(t, subj.ResultsSend, "perm-stranded"), &res); err != nil || res.Error == nil || res.Error.Code != messages.CodeUpstreamUnavailable {
		t.Fatalf("stranded job result = %+v (%v), want %s", res, err, messages.CodeUpstreamUnavailable)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	stream, err := r.observerJS.Stream(ctx, d.stream)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the stranded job is still in the stream: %d messages", info.State.Msgs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.stopAndCheck(t)
}

// refusal is something a user may not do: publish to a subject, or
// subscribe to one.
type refusal struct {
	name      string
	subscribe bool
	subject   string
}

// checkDenied does each refusal on nc and waits for the server's
// permissions violation naming its subject; then checks that the
// connection is still open, since NATS does not close it over a refusal.
func checkDenied(t *testing.T, nc *nats.Conn, errs *asyncErrors, refusals []refusal) {
	t.Helper()
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			verb := "Publish to"
			var err error
			if r.subscribe {
				verb = "Subscription to"
				_, err = nc.SubscribeSync(r.subject)
			} else {
				err = nc.Publish(r.subject, []byte("{}"))
			}
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%s %q", verb, r.subject)
			timeout := time.After(waitLimit)
			for {
				select {
				case err := <-errs.ch:
					if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
						return
					}
				case <-timeout:
					t.Fatalf("no permissions violation for %s; errors: %v", want, errs.all())
				}
			}
		})
	}
	if err := nc.FlushTimeout(waitLimit); err != nil || !nc.IsConnected() {
		t.Errorf("after %d refusals: flush %v, connected %v; want the connection open", len(refusals), err, nc.IsConnected())
	}
}

// TestPermissionsRefuse connects with each user of the config, as a
// compromised host could, and checks that the server refuses what the user
// has no need for: a worker reaches no other service's subjects, no other
// client's inbox, no stream delete, no other bucket, nothing of another
// deployment; a caller cannot answer requests, fake results or touch the
// worker's state.
func TestPermissionsRefuse(t *testing.T) {
	ns, _ := startConfiguredNATS(t)
	for i, d := range deployments {
		other := deployments[(i+1)%len(deployments)]
		t.Run(d.name+"/worker", func(t *testing.T) {
			nc, errs := connectAs(t, ns, d.workerUser, d.workerPassword, nats.CustomInboxPrefix(workerInbox(d.prefix)))
			checkDenied(t, nc, errs, []refusal{
				{"publish to another service", false, permForeign},
				{"publish into another client's inbox", false, "_INBOX.someone.1"},
				{"delete the jobs stream", false, "$JS.API.STREAM.DELETE." + d.stream},
				{"change the jobs stream", false, "$JS.API.STREAM.UPDATE." + d.stream},
				{"purge a bucket", false, "$JS.API.STREAM.PURGE.KV_" + d.bucket},
				{"write another bucket", false, "$KV.other_bucket.x"},
				{"publish a job", false, d.prefix + ".jobs.send"},
				{"publish another deployment's results", false, other.prefix + ".results.send"},
				{"subscribe to another service", true, permForeign},
				{"subscribe to other clients' inboxes", true, "_INBOX.>"},
				{"subscribe to another deployment's worker inboxes", true, workerInbox(other.prefix) + ".>"},
				{"subscribe to requests outside the queue group", true, d.prefix + ".send"},
				{"read a bucket's subjects", true, "$KV." + d.bucket + ".>"},
			})
		})
		t.Run(d.name+"/caller", func(t *testing.T) {
			nc, errs := connectAs(t, ns, d.callerUser, d.callerPassword)
			checkDenied(t, nc, errs, []refusal{
				{"fake a result", false, d.prefix + ".results.send"},
				{"write the worker's bucket", false, "$KV." + d.bucket + ".x"},
				{"delete the jobs stream", false, "$JS.API.STREAM.DELETE." + d.stream},
				{"call another deployment", false, other.prefix + ".send"},
				{"take requests", true, d.prefix + ".send"},
				{"read the jobs", true, d.prefix + ".jobs.>"},
				{"read the workers' inboxes", true, workerInbox(d.prefix) + ".>"},
			})
		})
	}
}

// TestPermissionsKVWatch opens, writes and watches the buckets that workers
// watch (the pumping guard's ranges and the fleet state) with the jetstream
// client as a worker user, as those features do: create when missing, put,
// get, a watcher that sees the put, stopped. No violation.
func TestPermissionsKVWatch(t *testing.T) {
	ns, violations := startConfiguredNATS(t)
	for _, d := range deployments {
		for _, bucket := range []string{d.bucket + "_ranges", d.bucket + "_fleet"} {
			t.Run(bucket, func(t *testing.T) {
				nc, errs := connectAs(t, ns, d.workerUser, d.workerPassword, nats.CustomInboxPrefix(workerInbox(d.prefix)))
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
				defer cancel()
				if _, err := js.KeyValue(ctx, bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
					t.Fatalf("KeyValue(%s) = %v, want %v", bucket, err, jetstream.ErrBucketNotFound)
				}
				kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
				if err != nil {
					t.Fatalf("creating %s: %v", bucket, err)
				}
				w, err := kv.WatchAll(ctx)
				if err != nil {
					t.Fatalf("watching %s: %v", bucket, err)
				}
				if _, err := kv.Create(ctx, "k", []byte("1")); err != nil {
					t.Fatalf("put: %v", err)
				}
				if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "1" {
					t.Fatalf("get = %v, %v; want 1", e, err)
				}
				for seen := false; !seen; {
					select {
					case e := <-w.Updates():
						seen = e != nil && e.Key() == "k"
					case <-ctx.Done():
						t.Fatalf("the watcher of %s did not see the put", bucket)
					}
				}
				if err := w.Stop(); err != nil {
					t.Errorf("stopping the watcher: %v", err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				for _, err := range errs.all() {
					t.Errorf("%s: %v", d.workerUser, err)
				}
			})
		}
	}
	for _, line := range violations.all() {
		t.Errorf("server: %s", line)
	}
}
