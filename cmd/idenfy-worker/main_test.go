package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// waitLimit bounds every wait below. It only guards against a hang: the
// tests poll for what they wait for and never depend on how long it takes.
const waitLimit = 30 * time.Second

func TestRunDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"demo"}, &out, &errOut, nil); err != nil {
		t.Fatalf("run(demo) = %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	if got := strings.TrimSpace(out.String()); !strings.HasSuffix(got, "Every step behaved.") {
		t.Errorf("run(demo) printed\n%s\nwant it to end with %q", got, "Every step behaved.")
	}
}

func TestRunUnknownCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"serve"}, &out, &errOut, nil)
	if !errors.Is(err, errUsage) {
		t.Fatalf("run(serve) = %v, want an error wrapping errUsage", err)
	}
	if !strings.Contains(err.Error(), `"serve"`) {
		t.Errorf("run(serve) = %q, want it to name the command", err)
	}
}

func TestRunHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, &out, &errOut, nil); err != nil {
		t.Fatalf("run(-h) = %v, want nil", err)
	}
	if !strings.Contains(out.String(), "usage: idenfy-worker") {
		t.Errorf("run(-h) printed %q, want the usage", out.String())
	}
}

func TestRunSubcommandBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"sandbox", "-log-level", "loud"},
		{"sandbox", "-no-such-flag"},
		{"demo", "-no-such-flag"},
	} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, &out, &errOut, nil); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}

func TestRunWorkerConfigError(t *testing.T) {
	var out, errOut bytes.Buffer
	env := testEnv(map[string]string{"IDENFY_API_KEY": unset})
	err := run(t.Context(), nil, &out, &errOut, env)
	var ce *configError
	if !errors.As(err, &ce) || ce.name != "IDENFY_API_KEY" {
		t.Fatalf("run(worker) without IDENFY_API_KEY = %v (%T), want a *configError naming IDENFY_API_KEY", err, err)
	}
	if errOut.Len() != 0 {
		t.Errorf("run(worker) logged before its configuration was valid:\n%s", errOut.String())
	}
}

// syncBuffer is a bytes.Buffer that goroutines may write concurrently.
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

// startNATS starts an embedded NATS server with JetStream in dir on port
// (-1: a random one), shut down by t.Cleanup.
func startNATS(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	return natstest.RunServer(t, &server.Options{Port: port, JetStream: true, StoreDir: dir})
}

// freeLocalAddr returns a 127.0.0.1 address that was free a moment ago: the
// worker reports no address it listens on, so the test picks one for it.
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// get returns the status and body of url; status 0 when it does not answer.
func get(url string) (int, string) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitStatus polls url until it answers status.
func waitStatus(t *testing.T, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got, body := get(url)
		if got == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q, still not %d", url, got, body, status)
		}
		<-tick.C
	}
}

// runningWorker is run(ctx, nil, ...), the production worker, in a
// goroutine.
type runningWorker struct {
	metrics string // base URL of /metrics, /healthz, /readyz
	logs    *syncBuffer
	cancel  context.CancelFunc
	done    chan error
	stopped bool
	err     error
}

func startWorker(t *testing.T, env map[string]string) *runningWorker {
	t.Helper()
	addr := freeLocalAddr(t)
	env["METRICS_ADDR"] = addr
	ctx, cancel := context.WithCancel(context.Background())
	w := &runningWorker{metrics: "http://" + addr, logs: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- run(ctx, nil, io.Discard, w.logs, env) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop cancels the worker's context, as SIGTERM does, and returns what run
// returned.
func (w *runningWorker) stop(t *testing.T) error {
	t.Helper()
	if w.stopped {
		return w.err
	}
	w.stopped = true
	w.cancel()
	select {
	case w.err = <-w.done:
	case <-time.After(waitLimit):
		t.Fatalf("run did not return after its context ended; logs:\n%s", w.logs.String())
	}
	return w.err
}

func workerEnv(natsURL, simURL string) map[string]string {
	return testEnv(map[string]string{
		"NATS_URL":                natsURL,
		"IDENFY_BASE_URL":         simURL,
		"WORKER_HASH_KEY":         testHashKey,
		"WORKER_SHUTDOWN_TIMEOUT": "5s",
		"LOG_FORMAT":              "json",
		"LOG_LEVEL":               "debug",
	})
}

func request[T any](t *testing.T, nc *nats.Conn, subject string, payload any) T {
	t.Helper()
	data, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, data, waitLimit)
	if err != nil {
		t.Fatalf("request on %s: %v", subject, err)
	}
	var res T
	dec := json.NewDecoder(bytes.NewReader(msg.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("answer %s on %s is not a contract result: %v", msg.Data, subject, err)
	}
	return res
}

// TestWorkerEndToEnd runs the production path, configuration from the
// environment to exit 0 on SIGTERM, against embedded NATS and the simulator.
func TestWorkerEndToEnd(t *testing.T) {
	t.Parallel()
	ns := startNATS(t, -1, t.TempDir())
	sim := idenfytest.NewServer(t, idenfytest.WithCredentials(testAPIKey, testAPISecret))
	// The server has no auth and ignores the user; the password must not
	// reach the logs.
	const natsPassword = "NATSPW-r4Ue8s-do-not-print"
	natsURL := strings.Replace(ns.ClientURL(), "nats://", "nats://e2e:"+natsPassword+"@", 1)
	w := startWorker(t, workerEnv(natsURL, sim.URL))
	waitStatus(t, w.metrics+"/readyz", http.StatusOK)

	nc := natstest.Connect(t, ns.ClientURL())
	const phone = "+12025550163"
	subj := messages.NewSubjects(messages.DefaultPrefix)
	sent := request[messages.SendResult](t, nc, subj.Send, messages.SendRequest{PhoneNumber: phone, CorrelationID: "e2e-1"})
	if sent.Status != messages.StatusSent || sent.RequestID == "" || sent.CorrelationID != "e2e-1" || sent.Attempts != 1 {
		t.Fatalf("send = %+v, want sent with a request_id, correlation_id e2e-1, 1 attempt", sent)
	}
	code, ok := sim.LastCode(phone)
	if !ok {
		t.Fatalf("the simulator texted nothing to %s", phone)
	}
	verified := request[messages.VerifyResult](t, nc, subj.Verify, messages.VerifyRequest{RequestID: sent.RequestID, ReceivedCode: code, CorrelationID: "e2e-2"})
	if verified.Status != messages.StatusVerified || !verified.IsVerified || verified.RequestID != sent.RequestID {
		t.Fatalf("verify = %+v, want verified", verified)
	}

	status, metrics := get(w.metrics + "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d", status)
	}
	for _, want := range []string{
		`idenfy_worker_outcomes_total{code="",intake="request",operation="send",status="sent"} 1`,
		`idenfy_worker_outcomes_total{code="",intake="request",operation="verify",status="verified"} 1`,
		`idenfy_worker_upstream_request_duration_seconds_bucket{operation="send",status="200",le="+Inf"} 1`,
		`idenfy_worker_upstream_request_duration_seconds_count{operation="send",status="200"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if status, body := get(w.metrics + "/healthz"); status != http.StatusOK {
		t.Errorf("GET /healthz = %d %q, want 200", status, body)
	}

	if err := w.stop(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil (exit 0)", err)
	}
	logs := w.logs.String()
	checkLogs(t, logs, []string{testAPIKey, testAPISecret, testHashKey, natsPassword, phone, strings.TrimPrefix(phone, "+")}, code)
	if want := `"nats_url":"` + redactURLs(natsURL) + `"`; !strings.Contains(logs, want) || !strings.Contains(want, "[redacted]@127.0.0.1") {
		t.Errorf("the configuration line lacks %s", want)
	}
}

var digitRun = regexp.MustCompile(`[0-9]+`)

// randomFields hold random identifiers, whose digit runs may equal a code
// by chance.
var randomFields = []string{"time", "request_id", "worker_id", "service_id"}

// checkLogs checks that every line is JSON, that the configuration was
// logged redacted, and that no line holds a secret or the code (a digit run
// of a string field).
func checkLogs(t *testing.T, logs string, secrets []string, code string) {
	t.Helper()
	var sawConfig, sawBye bool
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line holds %q: %s", s, line)
			}
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Errorf("log line is not JSON: %s", line)
			continue
		}
		for k, v := range ev {
			if s, ok := v.(string); ok && !slices.Contains(randomFields, k) && slices.Contains(digitRun.FindAllString(s, -1), code) {
				t.Errorf("log line holds the code %s in %s: %s", code, k, line)
			}
		}
		switch ev["message"] {
		case "configuration":
			sawConfig = true
			if ev["idenfy_api_key"] != "[redacted]" || ev["idenfy_api_secret"] != "[redacted]" {
				t.Errorf("configuration line without redacted secrets: %s", line)
			}
		case "bye":
			sawBye = true
		}
	}
	if !sawConfig || !sawBye {
		t.Errorf("logs lack the configuration line (%v) or the last one (%v):\n%s", sawConfig, sawBye, logs)
	}
}

// TestWorkerReadyFollowsNATS checks that /readyz says 503 while NATS is
// down and 200 once the worker reconnected to a server restarted on the
// same port and store.
func TestWorkerReadyFollowsNATS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := startNATS(t, -1, dir)
	port := ns.Addr().(*net.TCPAddr).Port
	sim := idenfytest.NewServer(t, idenfytest.WithCredentials(testAPIKey, testAPISecret))
	w := startWorker(t, workerEnv(ns.ClientURL(), sim.URL))
	ready := w.metrics + "/readyz"
	waitStatus(t, ready, http.StatusOK)

	ns.Shutdown()
	ns.WaitForShutdown()
	waitStatus(t, ready, http.StatusServiceUnavailable)
	if status, body := get(w.metrics + "/healthz"); status != http.StatusOK {
		t.Errorf("GET /healthz with NATS down = %d %q, want 200: the process is alive", status, body)
	}

	ns = startNATS(t, port, dir)
	waitStatus(t, ready, http.StatusOK)

	nc := natstest.Connect(t, ns.ClientURL())
	subj := messages.NewSubjects(messages.DefaultPrefix)
	sent := request[messages.SendResult](t, nc, subj.Send, messages.SendRequest{PhoneNumber: "+447700900123"})
	if sent.Status != messages.StatusSent {
		t.Errorf("send after the reconnect = %+v, want sent", sent)
	}
	if err := w.stop(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	if !strings.Contains(w.logs.String(), "NATS reconnected") {
		t.Errorf("logs lack the reconnect:\n%s", w.logs.String())
	}
}

// TestWorkerWaitsForNATS starts the worker before NATS: it must wait, not
// exit, and serve once the server is up.
func TestWorkerWaitsForNATS(t *testing.T) {
	t.Parallel()
	natsAddr := freeLocalAddr(t)
	_, portStr, _ := net.SplitHostPort(natsAddr)
	port, _ := strconv.Atoi(portStr)
	sim := idenfytest.NewServer(t, idenfytest.WithCredentials(testAPIKey, testAPISecret))
	dir := t.TempDir()
	w := startWorker(t, workerEnv("nats://"+natsAddr, sim.URL))
	// /readyz answers 503 from the start: the metrics server comes up
	// before the worker has NATS.
	waitStatus(t, w.metrics+"/readyz", http.StatusServiceUnavailable)
	startNATS(t, port, dir)
	waitStatus(t, w.metrics+"/readyz", http.StatusOK)
	if err := w.stop(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
}
