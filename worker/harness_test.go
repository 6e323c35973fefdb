package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/clocktest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The test harness: a real NATS server embedded on a random port with
// JetStream in a temporary directory, the iDenfy simulator over real HTTP, and
// a worker between them on a fake clock. Nothing is mocked.

// startNATS starts an embedded NATS server with JetStream, shut down by
// t.Cleanup.
func startNATS(t testing.TB) *server.Server {
	t.Helper()
	return natstest.RunServer(t, nil)
}

// startNATSAt starts one on port (-1: random) with its store in dir, so
// that a test can stop it and start it again where it was.
func startNATSAt(t testing.TB, port int, dir string) *server.Server {
	t.Helper()
	return natstest.RunServer(t, &server.Options{Port: port, JetStream: true, StoreDir: dir})
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is one worker under test with everything it talks to.
type harness struct {
	t     testing.TB
	ns    *server.Server
	sim   *idenfytest.Server
	nc    *nats.Conn // the caller's connection
	js    jetstream.JetStream
	w     *worker.Worker
	clock *clocktest.Clock
	logs  *syncBuffer
	reg   *prometheus.Registry // the worker's metrics: read them with metric
	subj  messages.Subjects
	cfg   worker.Config
}

type harnessOption func(*harnessSetup)

type harnessSetup struct {
	cfg       worker.Config
	workerOpt []worker.Option
	clock     *clocktest.Clock
	timeout   time.Duration
	ns        *server.Server
	sim       *idenfytest.Server
	noStart   bool
	wallClock bool
	baseURL   func(simURL string) string
	apiKey    string // with apiSecret, the client's credentials if not the simulator's
	apiSecret string
}

// withConfig edits the worker's configuration before it starts.
func withConfig(f func(*worker.Config)) harnessOption {
	return func(s *harnessSetup) { f(&s.cfg) }
}

// withWorkerOptions adds worker options.
func withWorkerOptions(opts ...worker.Option) harnessOption {
	return func(s *harnessSetup) { s.workerOpt = append(s.workerOpt, opts...) }
}

// withAttemptTimeout sets the client's per-attempt timeout.
func withAttemptTimeout(d time.Duration) harnessOption {
	return func(s *harnessSetup) { s.timeout = d }
}

// sharing reuses another harness's NATS server, simulator and clock: a
// second worker of the same deployment.
func sharing(other *harness) harnessOption {
	return func(s *harnessSetup) {
		s.ns, s.sim, s.clock = other.ns, other.sim, other.clock
	}
}

// withoutStart leaves the worker unstarted: call h.start.
func withoutStart() harnessOption {
	return func(s *harnessSetup) { s.noStart = true }
}

// withBaseURL points the worker's iDenfy client at base(simulator URL)
// instead of the simulator: a proxy in front of it, or a port nobody serves.
func withBaseURL(base func(simURL string) string) harnessOption {
	return func(s *harnessSetup) { s.baseURL = base }
}

// withClientCredentials gives the worker's iDenfy client other credentials
// than those the simulator expects.
func withClientCredentials(apiKey, apiSecret string) harnessOption {
	return func(s *harnessSetup) { s.apiKey, s.apiSecret = apiKey, apiSecret }
}

// withWallClock runs the worker on the real clock.
func withWallClock() harnessOption {
	return func(s *harnessSetup) { s.wallClock = true }
}

// testHashKey is the hash key of every test worker.
var testHashKey = []byte("test hash key")

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	setup := harnessSetup{
		cfg: worker.Config{
			SendLimits:      nil,
			ShutdownTimeout: 5 * time.Second,
			// The fleet's breaker would open during the tests of one
			// request's retries; its own tests turn it on.
			Breaker: worker.Breaker{Off: true},
		},
		timeout: 2 * time.Second,
	}
	for _, opt := range opts {
		opt(&setup)
	}
	h := &harness{t: t, logs: &syncBuffer{}}
	h.ns = setup.ns
	if h.ns == nil {
		h.ns = startNATS(t)
	}
	h.clock = setup.clock
	if h.clock == nil {
		h.clock = clocktest.New(time.Now())
	}
	h.sim = setup.sim
	if h.sim == nil {
		h.sim = idenfytest.NewServer(t, idenfytest.WithClock(h.clock.Now()))
	}
	h.nc = natstest.Connect(t, h.ns.ClientURL())
	var err error
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}

	var client *idenfy.Client
	if setup.baseURL == nil && setup.apiKey == "" {
		client = h.sim.Client(idenfy.WithTimeout(setup.timeout))
	} else {
		baseURL, apiKey, apiSecret := h.sim.URL, idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret
		if setup.baseURL != nil {
			baseURL = setup.baseURL(h.sim.URL)
		}
		if setup.apiKey != "" {
			apiKey, apiSecret = setup.apiKey, setup.apiSecret
		}
		client, err = idenfy.NewClient(idenfy.Config{BaseURL: baseURL, APIKey: apiKey, APISecret: apiSecret},
			idenfy.WithTimeout(setup.timeout))
		if err != nil {
			t.Fatal(err)
		}
	}
	workerConn := natstest.Connect(t, h.ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	cfg := setup.cfg
	cfg.Conn = workerConn
	cfg.Client = client
	cfg.HashKey = testHashKey
	cfg.Logger = zerolog.New(h.logs).Level(zerolog.DebugLevel)
	h.reg = prometheus.NewRegistry()
	cfg.Registerer = h.reg
	h.cfg = cfg
	h.subj = messages.NewSubjects(prefixOr(cfg.Prefix))
	wopts := setup.workerOpt
	if !setup.wallClock {
		wopts = append([]worker.Option{worker.WithClock(h.clock)}, wopts...)
	}
	h.w, err = worker.New(cfg, wopts...)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	if !setup.noStart {
		h.start()
	}
	return h
}

// metric sums the samples of the worker's metric name whose labels include
// labels, given as name, value pairs: the value of counters and gauges, the
// number of observations of histograms. What a test learns from it does not
// depend on the wording of log lines.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		h.t.Fatalf("gathering the metrics: %v", err)
	}
	want := make(map[string]string)
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			matched := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					matched++
				}
			}
			if matched != len(want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			case m.Untyped != nil:
				sum += m.GetUntyped().GetValue()
			}
		}
	}
	return sum
}

// start starts the worker, shut down by t.Cleanup.
func (h *harness) start() {
	h.t.Helper()
	t := h.t
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.w.Start(ctx); err != nil {
		t.Fatalf("worker.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("worker logs:\n%s", h.logs)
		}
	})
}

func prefixOr(p string) string {
	if p == "" {
		return messages.DefaultPrefix
	}
	return p
}

// request sends payload to subject and returns the answer.
func (h *harness) request(subject string, payload any, hdr nats.Header) *nats.Msg {
	h.t.Helper()
	var data []byte
	switch p := payload.(type) {
	case []byte:
		data = p
	case string:
		data = []byte(p)
	default:
		var err error
		if data, err = json.Marshal(p); err != nil {
			h.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg, err := h.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: data, Header: hdr})
	if err != nil {
		h.t.Fatalf("request on %s: %v", subject, err)
	}
	return msg
}

func (h *harness) send(req any, hdr nats.Header) messages.SendResult {
	h.t.Helper()
	var res messages.SendResult
	decodeInto(h.t, h.request(h.subj.Send, req, hdr).Data, &res)
	return res
}

func (h *harness) verify(req any, hdr nats.Header) messages.VerifyResult {
	h.t.Helper()
	var res messages.VerifyResult
	decodeInto(h.t, h.request(h.subj.Verify, req, hdr).Data, &res)
	return res
}

func decodeInto(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
}

// sendCode sends a code to phone over request/reply and returns the
// request_id and the code the simulator texted.
func (h *harness) sendCode(phone string) (requestID, code string) {
	h.t.Helper()
	res := h.send(messages.SendRequest{PhoneNumber: phone}, nil)
	if res.Status != messages.StatusSent {
		h.t.Fatalf("send(%s) = %+v, want sent", phone, res)
	}
	code, ok := h.sim.LastCode(phone)
	if !ok {
		h.t.Fatalf("no code in the outbox of %s", phone)
	}
	return res.RequestID, code
}

// subscribe collects the messages of subject.
func (h *harness) subscribe(subject string) *nats.Subscription {
	h.t.Helper()
	sub, err := h.nc.SubscribeSync(subject)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// next returns the next message of sub, failing the test after 30s.
func next(t testing.TB, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	msg, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("waiting on %s: %v", sub.Subject, err)
	}
	return msg
}

// publishJob publishes a job and waits for JetStream's ack.
func (h *harness) publishJob(subject string, payload any, hdr nats.Header) *jetstream.PubAck {
	h.t.Helper()
	data, ok := payload.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(payload); err != nil {
			h.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: hdr})
	if err != nil {
		h.t.Fatalf("publishing a job on %s: %v", subject, err)
	}
	return ack
}

// waitFor polls cond until it holds, failing the test after 30s. It is for
// state that changes in another process or goroutine; it asserts nothing
// about how long that takes.
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

func header(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}
