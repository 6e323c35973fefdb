package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The workers of one deployment as one client of iDenfy (README "One fleet
// toward iDenfy"), seen from iDenfy's side: every vendor call is recorded
// as it reaches the simulator, with the worker it came from, so that the
// tests assert what iDenfy received and when, not how fast anything went.

// loggedCall is one vendor call as the simulator received it.
type loggedCall struct {
	from    string // the front it came through: one per worker
	phone   string // of a send; "" for a verify
	at, end time.Time
	status  int
}

// callLog records the vendor calls of every front of a test.
type callLog struct {
	mu    sync.Mutex
	calls []loggedCall
}

func (l *callLog) snapshot() []loggedCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

func (l *callLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// front serves the simulator to one worker, recording its calls in the
// log. While held, each call waits, once recorded, for a ticket (let)
// before it reaches the simulator: a test can then tell what was asked
// for before anything was answered.
type front struct {
	URL  string
	from string
	log  *callLog

	mu      sync.Mutex
	tickets chan struct{} // nil: calls pass
}

func newFront(t testing.TB, sim http.Handler, log *callLog, from string) *front {
	t.Helper()
	f := &front{from: from, log: log}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var send struct {
			Phone string `json:"phone_number"`
		}
		_ = json.Unmarshal(body, &send)
		log.mu.Lock()
		i := len(log.calls)
		log.calls = append(log.calls, loggedCall{from: from, phone: send.Phone, at: time.Now()})
		log.mu.Unlock()
		f.mu.Lock()
		tickets := f.tickets
		f.mu.Unlock()
		if tickets != nil {
			select {
			case <-tickets:
			case <-r.Context().Done():
				return
			}
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		sim.ServeHTTP(sw, r)
		log.mu.Lock()
		log.calls[i].end, log.calls[i].status = time.Now(), sw.status
		log.mu.Unlock()
	}))
	f.URL = srv.URL
	t.Cleanup(func() {
		f.open()
		srv.Close()
	})
	return f
}

// hold makes the calls arriving from now on wait for a ticket.
func (f *front) hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tickets == nil {
		f.tickets = make(chan struct{}, 1024)
	}
}

// let lets n held calls through, now or as they arrive.
func (f *front) let(n int) {
	f.mu.Lock()
	tickets := f.tickets
	f.mu.Unlock()
	for range n {
		tickets <- struct{}{}
	}
}

// open lets every held call through and stops holding.
func (f *front) open() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tickets != nil {
		close(f.tickets)
		f.tickets = nil
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// onDeployment runs the harness's worker on the given NATS server and
// simulator, on the wall clock, calling iDenfy through f.
func onDeployment(ns *server.Server, sim *idenfytest.Server, f *front) harnessOption {
	return func(s *harnessSetup) {
		s.ns, s.sim, s.wallClock = ns, sim, true
		s.baseURL = func(string) string { return f.URL }
	}
}

// asFleetMember gives a worker subjects and a stream of its own while it
// shares the default KV bucket, and so the fleet, with the others: a test
// can then tell which worker a request goes to.
func asFleetMember(name string, edit func(*worker.Config)) harnessOption {
	return withConfig(func(c *worker.Config) {
		c.Prefix = "fleet." + name
		c.Stream = "FLEET_" + name + "_JOBS"
		c.ResultsStream = "FLEET_" + name + "_RESULTS"
		if edit != nil {
			edit(c)
		}
	})
}

// fleetPhone is the number of the i-th request of these tests; jobs use
// publishJobs's numbers, below +12025559000.
func fleetPhone(i int) string { return fmt.Sprintf("+1202555%04d", 9000+i) }

// The limit is the deployment's: three worker processes with
// WORKER_RATE_LIMIT=30/s and a backlog of jobs never give iDenfy more than
// the limit plus a second's share within any window; one killed with
// SIGKILL in the middle holds no turns: the others go on at once, and every
// job completes.
func TestFleetRateLimitAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const (
		rate        = 30
		jobs        = 150
		concurrency = 8
	)
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	log := &callLog{}
	nc := natstest.Connect(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subj := messages.NewSubjects(messages.DefaultPrefix)
	results := captureResults(t, js, subj)
	// A short ack wait brings the dead worker's jobs back within seconds.
	jobStream := createJobsTopology(t, js, subj, 2*time.Second)

	env := []string{fmt.Sprint("CHILD_RATE_LIMIT=", rate, "/s"), fmt.Sprint("CHILD_CONCURRENCY=", concurrency),
		"CHILD_SEND_LIMITS=off", "CHILD_LEASE=2s"}
	children := make([]*child, 3)
	for i := range children {
		f := newFront(t, sim, log, fmt.Sprint("w", i))
		children[i] = startChild(t, ns.ClientURL(), f.URL, env...)
	}
	publishJobs(t, js, subj, jobs)

	waitFor(t, "a third of the jobs to reach iDenfy", func() bool { return log.count() >= jobs/3 })
	children[0].kill(t)
	killedAt := time.Now()
	waitFor(t, "every job to be acked", func() bool { return streamMsgs(t, jobStream) == 0 })

	byID := resultsByID(t, js, results)
	for i := range jobs {
		rs := byID[fmt.Sprint("job-", i)]
		if len(rs) == 0 || rs[0].Status != messages.StatusSent {
			t.Errorf("job %d results = %+v, want sent", i, rs)
		}
	}

	calls := log.snapshot()
	var times []time.Time
	afterKill := 0
	for _, c := range calls {
		times = append(times, c.at)
		if c.from != "w0" && c.at.After(killedAt) && c.at.Sub(killedAt) <= 3*time.Second {
			afterKill++
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	span := times[len(times)-1].Sub(times[0])
	t.Logf("%d calls over %s (%.1f/s, limit %d/s); most in 1s: %d", len(times), span.Round(time.Millisecond),
		float64(len(times)-1)/span.Seconds(), rate, idenfytest.MostInWindow(times, time.Second))
	// README: over any window, at most the limit plus a second's share.
	for _, w := range []time.Duration{time.Second, 2 * time.Second, span + time.Nanosecond} {
		bound := int(rate*w.Seconds()) + rate
		if got := idenfytest.MostInWindow(times, w); got > bound {
			t.Errorf("iDenfy got %d calls within %s, want at most %d (the limit %d/s plus a second's share)", got, w, bound, rate)
		}
	}
	// The dead worker's tokens are forfeited after 250ms: within 3s the
	// others have had at least a second's share of turns.
	if afterKill < rate {
		t.Errorf("the surviving workers made %d calls within 3s of the kill, want at least %d", afterKill, rate)
	}
}

// A 429 to one worker pauses the other: a call it starts once it knows of
// the pause reaches iDenfy only after the Retry-After has passed, while
// its call already under way finishes; every request is answered in the
// end.
func TestFleet429PausesOtherWorkers(t *testing.T) {
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	log := &callLog{}
	fa, fb := newFront(t, sim, log, "a"), newFront(t, sim, log, "b")
	a := newHarness(t, onDeployment(ns, sim, fa), asFleetMember("a", nil))
	b := newHarness(t, onDeployment(ns, sim, fb), asFleetMember("b", nil))

	type answer struct {
		name string
		res  messages.SendResult
	}
	answers := make(chan answer, 4)
	ask := func(h *harness, name string, i int) {
		go func() {
			data, _ := json.Marshal(messages.SendRequest{PhoneNumber: fleetPhone(i)})
			msg, err := h.nc.Request(h.subj.Send, data, 30*time.Second)
			var res messages.SendResult
			if err == nil {
				err = json.Unmarshal(msg.Data, &res)
			}
			if err != nil {
				t.Errorf("request %s: %v", name, err)
			}
			answers <- answer{name, res}
		}()
	}

	// b's first call is under way (held at its front) when a gets the 429.
	fb.hold()
	ask(b, "under way", 0)
	waitFor(t, "b's first call to reach its front", func() bool { return log.count() == 1 })
	if err := sim.InjectFault(idenfytest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "2"}); err != nil {
		t.Fatal(err)
	}
	ask(a, "429", 1)
	var answered429 time.Time
	waitFor(t, "a's call to be answered 429", func() bool {
		for _, c := range log.snapshot() {
			if c.status == http.StatusTooManyRequests {
				answered429 = c.end
				return true
			}
		}
		return false
	})
	pauseEnd := answered429.Add(2 * time.Second)
	waitFor(t, "b to know of the pause", func() bool { return b.metric("idenfy_worker_paused_seconds_total") > 0 })
	ask(b, "b after", 2)
	ask(a, "a after", 3)
	fb.open()

	for range 4 {
		an := <-answers
		if an.res.Status != messages.StatusSent {
			t.Errorf("request %q = %+v, want sent", an.name, an.res)
		}
	}
	for _, c := range log.snapshot() {
		switch {
		case c.phone == fleetPhone(0) && !c.end.Before(pauseEnd):
			t.Errorf("the call under way when the pause began ended at +%s of the 2s pause, want it to finish during it", c.end.Sub(answered429))
		case c.phone != fleetPhone(0) && c.at.After(answered429) && c.at.Before(pauseEnd):
			t.Errorf("a call of %s reached iDenfy %s into the 2s pause, want none before it passed", c.from, c.at.Sub(answered429))
		}
	}
	if got := log.count(); got != 5 {
		t.Errorf("iDenfy got %d calls, want 5 (the 429 retried once)", got)
	}
}

// The breaker, across two workers: 503s to both open it; a request is then
// refused at once with error.retry_after and without a call; while open,
// iDenfy gets one probe per interval from the whole fleet, the jobs stay
// in the stream without spending deliveries, and once iDenfy answers again
// a probe closes the breaker and every job completes.
func TestFleetBreakerAcrossWorkers(t *testing.T) {
	const probe = 2 * time.Second
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	log := &callLog{}
	fa, fb := newFront(t, sim, log, "a"), newFront(t, sim, log, "b")
	breaker := func(c *worker.Config) {
		c.Breaker = worker.Breaker{N: 3, Window: 10 * time.Second}
		c.BreakerProbe = probe
	}
	a := newHarness(t, onDeployment(ns, sim, fa), asFleetMember("a", breaker))
	b := newHarness(t, onDeployment(ns, sim, fb), asFleetMember("b", breaker))
	results := a.subscribe(a.subj.ResultsSend)

	if err := sim.InjectFault(idenfytest.Fault{Status: http.StatusServiceUnavailable, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, h := range []*harness{a, b} {
		wg.Go(func() {
			if res := h.send(messages.SendRequest{PhoneNumber: fleetPhone(i)}, nil); res.Error == nil || res.Error.Code != messages.CodeUpstreamUnavailable {
				t.Errorf("send during the outage = %+v, want upstream_unavailable", res)
			}
		})
	}
	waitFor(t, "the breaker to open on both workers", func() bool {
		return a.metric("idenfy_worker_breaker_state") != 0 && b.metric("idenfy_worker_breaker_state") != 0
	})
	opened := time.Now()
	// Asked at once, well before the first probe is due, a request is
	// refused without a call.
	refusedBefore := a.metric("idenfy_worker_breaker_refused_total")
	res := a.send(messages.SendRequest{PhoneNumber: fleetPhone(2)}, nil)
	if res.Error == nil || res.Error.Code != messages.CodeUpstreamUnavailable || res.Error.RetryAfter < 1 {
		t.Errorf("send with the breaker open = %+v, want upstream_unavailable with retry_after", res)
	}
	for _, c := range log.snapshot() {
		if c.phone == fleetPhone(2) {
			t.Errorf("the request refused by the open breaker reached iDenfy at +%s", c.at.Sub(opened))
		}
	}
	if got := a.metric("idenfy_worker_breaker_refused_total"); got <= refusedBefore {
		t.Errorf("idenfy_worker_breaker_refused_total = %v after a refusal, want more than %v", got, refusedBefore)
	}
	wg.Wait()
	froms := map[string]bool{}
	for _, c := range log.snapshot() {
		froms[c.from] = true
	}
	if !froms["a"] || !froms["b"] {
		t.Errorf("the failures that opened the breaker came from %v, want both workers", froms)
	}

	const jobs = 20
	publishJobs(t, a.js, a.subj, jobs)
	probesFrom := log.count()
	waitFor(t, "two probes to reach iDenfy", func() bool { return log.count() >= probesFrom+2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := a.js.Consumer(ctx, a.cfg.Stream, worker.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// At most one job per worker is taken out to probe with.
	if info.NumPending < jobs-2 || info.NumRedelivered != 0 {
		t.Errorf("with the breaker open: %d jobs pending, %d redelivered, want at least %d pending and none redelivered",
			info.NumPending, info.NumRedelivered, jobs-2)
	}
	for name, h := range map[string]*harness{"a": a, "b": b} {
		if got := h.metric("idenfy_worker_breaker_state"); got != 1 && got != 2 {
			t.Errorf("worker %s: idenfy_worker_breaker_state = %v while open, want 1 or 2", name, got)
		}
	}

	sim.ClearFaults()
	cleared := time.Now()
	for done := 0; done < jobs; {
		var r messages.SendResult
		decodeInto(t, next(t, results).Data, &r)
		if !strings.HasPrefix(r.CorrelationID, "job-") {
			continue // the outcome of a request above
		}
		done++
		if r.Status != messages.StatusSent {
			t.Errorf("job result after the outage = %+v, want sent", r)
		}
	}
	waitFor(t, "the breaker to close on both workers", func() bool {
		return a.metric("idenfy_worker_breaker_state") == 0 && b.metric("idenfy_worker_breaker_state") == 0
	})

	// While open (from the test's sight of the opening to the first call
	// answered after the faults were cleared, the probe that closed it):
	// one call per probe interval, from the whole fleet.
	var probes []loggedCall
	for _, c := range log.snapshot() {
		if c.at.After(opened) {
			probes = append(probes, c)
			if c.at.After(cleared) {
				break
			}
		}
	}
	slices.SortFunc(probes, func(x, y loggedCall) int { return x.at.Compare(y.at) })
	for i := 1; i < len(probes); i++ {
		if gap := probes[i].at.Sub(probes[i-1].at); gap < probe-100*time.Millisecond {
			t.Errorf("probes %d (%s) and %d (%s) reached iDenfy %s apart, want at least the probe interval %s",
				i-1, probes[i-1].from, i, probes[i].from, gap, probe)
		}
	}
	t.Logf("%d probes while open for %s", len(probes), time.Since(opened).Round(time.Millisecond))
}

// Requests first: with every place taken by a deep backlog of jobs, a
// request waiting for a place gets the next one that frees, before any of
// the jobs waiting too.
func TestFleetRequestOvertakesJobBacklog(t *testing.T) {
	const concurrency = 4
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	if err := sim.InjectFault(idenfytest.Fault{Latency: "50ms"}); err != nil {
		t.Fatal(err)
	}
	log := &callLog{}
	f := newFront(t, sim, log, "w")
	h := newHarness(t, onDeployment(ns, sim, f), withConfig(func(c *worker.Config) { c.Concurrency = concurrency }))

	f.hold()
	publishJobs(t, h.js, h.subj, 300)
	waitFor(t, "the jobs to take every place", func() bool { return log.count() == concurrency })
	// Once nothing moves, the jobs that wait for a place have been counted.
	saturated := h.metric("idenfy_worker_pool_saturated_total")
	for stable := 0; stable < 3; {
		time.Sleep(100 * time.Millisecond)
		now := h.metric("idenfy_worker_pool_saturated_total")
		if now == saturated {
			stable++
		} else {
			saturated, stable = now, 0
		}
	}

	answered := make(chan messages.SendResult, 1)
	go func() {
		data, _ := json.Marshal(messages.SendRequest{PhoneNumber: fleetPhone(0)})
		msg, err := h.nc.Request(h.subj.Send, data, 30*time.Second)
		var res messages.SendResult
		if err == nil {
			err = json.Unmarshal(msg.Data, &res)
		}
		if err != nil {
			t.Errorf("request: %v", err)
		}
		answered <- res
	}()
	waitFor(t, "the request to wait for a place", func() bool {
		return h.metric("idenfy_worker_pool_saturated_total") > saturated
	})
	if got := log.count(); got != concurrency {
		t.Fatalf("%d calls reached iDenfy before a place freed, want %d", got, concurrency)
	}
	f.let(1) // one job's call ends, its place frees
	waitFor(t, "the next call", func() bool { return log.count() > concurrency })
	if c := log.snapshot()[concurrency]; c.phone != fleetPhone(0) {
		t.Errorf("the call after the first place freed was for %s, want the request's (%s)",
			messages.MaskPhone(c.phone), messages.MaskPhone(fleetPhone(0)))
	}
	f.open()
	if res := <-answered; res.Status != messages.StatusSent {
		t.Errorf("request = %+v, want sent", res)
	}
}
