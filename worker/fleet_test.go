package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// manualClock moves only when the test advances it; After fires once the
// clock has passed its time, so a test can see that something waits.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []manualTimer
}

type manualTimer struct {
	at time.Time
	ch chan time.Time
}

func newManualClock() *manualClock { return &manualClock{now: time.Unix(1_800_000_000, 0)} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, manualTimer{at: c.now.Add(d), ch: ch})
	return ch
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
}

// waiting is how many After channels have not fired yet.
func (c *manualClock) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// logBuffer is a log sink safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// testFleet is one worker's fleet, on a NATS connection of its own.
type testFleet struct {
	*fleet
	nc *nats.Conn
}

type fleetSetup struct {
	rate  RateLimit
	br    Breaker
	probe time.Duration
	clock Clock
	logs  *logBuffer
}

// startFleets starts n fleets on one embedded server, each on its own
// connection, as n workers would be.
func startFleets(t *testing.T, n int, s fleetSetup) []testFleet {
	t.Helper()
	ns := natstest.RunServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []testFleet
	for i := range n {
		nc := natstest.Connect(t, ns.ClientURL())
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		kv, err := js.CreateOrUpdateKeyValue(ctx, fleetBucketConfig("idenfy_phone", 1))
		if err != nil {
			t.Fatal(err)
		}
		var log zerolog.Logger
		if s.logs != nil {
			log = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), s.logs))
		} else {
			log = zerolog.New(zerolog.NewTestWriter(t))
		}
		f := newFleet(kv, nc, fmt.Sprintf("w%d", i), s.rate, s.br, s.probe, s.clock, log)
		if err := f.start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.stop)
		out = append(out, testFleet{fleet: f, nc: nc})
	}
	return out
}

// eventually waits for cond, which the watches of other fleets make true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func refusal(err error) *fleetRefusal {
	var r *fleetRefusal
	if errors.As(err, &r) {
		return r
	}
	return nil
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A 429 seen by one worker pauses the others until its Retry-After has
// passed: a call whose budget ends sooner is refused at once, the others
// wait and go once the pause is over. The pause is logged once.
func TestFleet429PausesEveryWorker(t *testing.T) {
	clock := newManualClock()
	logs := &logBuffer{}
	fs := startFleets(t, 2, fleetSetup{clock: clock, logs: logs})
	a, b := fs[0], fs[1]

	a.report(turn{}, outcomeRateLimited, 10*time.Second)
	a.report(turn{}, outcomeRateLimited, 10*time.Second) // a second call in flight answered 429 too
	eventually(t, "b sees the pause", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.pause.val.Until > clock.Now().UnixNano()
	})
	b.report(turn{}, outcomeRateLimited, 5*time.Second) // shorter: changes nothing

	_, err := b.admit(withTimeout(t, time.Second), true)
	if r := refusal(err); r == nil || r.Reason != refusedPaused || r.RetryAfter != 10*time.Second {
		t.Fatalf("admit with a 1s budget during a 10s pause = %v, want a paused refusal with retry after 10s", err)
	}

	admitted := make(chan error, 1)
	go func() {
		_, err := b.admit(context.Background(), false)
		admitted <- err
	}()
	eventually(t, "admit waits for the pause", func() bool { return clock.waiting() == 1 })
	select {
	case err := <-admitted:
		t.Fatalf("admit during the pause returned %v, want it to wait", err)
	default:
	}
	clock.Advance(10 * time.Second)
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatalf("admit after the pause = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("admit still waits after the pause passed")
	}
	if got := b.pausedTotal(); got != 10*time.Second {
		t.Errorf("b.pausedTotal() = %v, want 10s", got)
	}
	if n := logs.count("every worker pauses"); n != 1 {
		t.Errorf("the pause was logged %d times, want once", n)
	}
}

// The breaker opens after N unavailable answers in a row from different
// workers; while open it refuses at once with the time to the next probe,
// grants exactly one probe per interval to the whole fleet, stays open on
// a failed probe and closes on a successful one.
func TestFleetBreakerOpensProbesAndCloses(t *testing.T) {
	clock := newManualClock()
	logs := &logBuffer{}
	fs := startFleets(t, 3, fleetSetup{clock: clock, logs: logs, br: Breaker{N: 3, Window: 10 * time.Second}, probe: 5 * time.Second})
	allSee := func(what string, open bool) {
		t.Helper()
		for i, f := range fs {
			eventually(t, fmt.Sprintf("fleet %d %s", i, what), func() bool {
				f.mu.Lock()
				defer f.mu.Unlock()
				return (f.breaker.val.State == breakerOpen) == open && (open || f.breaker.val.State == breakerClosed)
			})
		}
	}

	fs[0].report(turn{}, outcomeUnavailable, 0)
	fs[1].report(turn{}, outcomeUnavailable, 0)
	// A success writes only when the worker's copy shows failures to reset.
	eventually(t, "fleet 2 sees 2 failures", func() bool {
		fs[2].mu.Lock()
		defer fs[2].mu.Unlock()
		return fs[2].breaker.val.Fails == 2
	})
	fs[2].report(turn{}, outcomeSuccess, 0) // not in a row any more
	fs[2].report(turn{}, outcomeUnavailable, 0)
	fs[0].report(turn{}, outcomeUnavailable, 0)
	if fs[0].open() {
		t.Fatal("the breaker opened after 2 failures in a row, want 3")
	}
	fs[1].report(turn{}, outcomeUnavailable, 0)
	allSee("sees the breaker open", true)
	closed := fs[1].breakerClosed()
	select {
	case <-closed:
		t.Fatal("breakerClosed() fired while the breaker is open")
	default:
	}

	for i, f := range fs {
		_, err := f.admit(context.Background(), true)
		if r := refusal(err); r == nil || r.Reason != refusedBreakerOpen || r.RetryAfter != 5*time.Second {
			t.Errorf("fleet %d: admit while open = %v, want a breaker_open refusal with retry after 5s", i, err)
		}
	}

	probeRound := func() *testFleet {
		t.Helper()
		type result struct {
			f   *testFleet
			t   turn
			err error
		}
		results := make(chan result, 2*len(fs))
		var wg sync.WaitGroup
		for i := range fs {
			for range 2 {
				wg.Go(func() {
					tn, err := fs[i].admit(context.Background(), i%2 == 0)
					results <- result{&fs[i], tn, err}
				})
			}
		}
		wg.Wait()
		close(results)
		var prober *testFleet
		for r := range results {
			switch {
			case r.err == nil && r.t.probe:
				if prober != nil {
					t.Fatal("two probe turns in one interval, want one for the fleet")
				}
				prober = r.f
			case refusal(r.err) == nil || refusal(r.err).Reason != refusedBreakerOpen:
				t.Fatalf("admit when a probe is due = %+v, %v; want a probe turn or a breaker_open refusal", r.t, r.err)
			}
		}
		if prober == nil {
			t.Fatal("no probe turn once the probe was due")
		}
		return prober
	}

	clock.Advance(5 * time.Second)
	prober := probeRound()
	if g := prober.breaker.val.gauge(); g != 2 {
		t.Errorf("breaker gauge of the prober = %v, want 2 (half-open)", g)
	}
	prober.report(turn{probe: true}, outcomeUnavailable, 0)
	allSee("sees the breaker open again", true)
	for i, f := range fs {
		if _, err := f.admit(context.Background(), false); refusal(err) == nil {
			t.Errorf("fleet %d: admit after a failed probe, before the next = %v, want a refusal", i, err)
		}
	}

	clock.Advance(5 * time.Second)
	prober = probeRound()
	prober.report(turn{probe: true}, outcomeSuccess, 0)
	allSee("sees the breaker closed", false)
	select {
	case <-closed:
	default:
		t.Error("breakerClosed() did not fire when the breaker closed")
	}
	for i, f := range fs {
		if tn, err := f.admit(context.Background(), false); err != nil || tn.probe {
			t.Errorf("fleet %d: admit once closed = %+v, %v; want a plain turn", i, tn, err)
		}
	}
	if n := logs.count("circuit breaker open"); n != 1 {
		t.Errorf("the opening was logged %d times, want once", n)
	}
	if n := logs.count("circuit breaker closed"); n != 1 {
		t.Errorf("the closing was logged %d times, want once", n)
	}
}

// Failures further apart than the window are not in a row.
func TestFleetBreakerCountsWithinTheWindow(t *testing.T) {
	clock := newManualClock()
	fs := startFleets(t, 2, fleetSetup{clock: clock, br: Breaker{N: 3, Window: 10 * time.Second}})
	fs[0].report(turn{}, outcomeUnavailable, 0)
	fs[1].report(turn{}, outcomeUnavailable, 0)
	clock.Advance(11 * time.Second)
	fs[0].report(turn{}, outcomeUnavailable, 0)
	fs[1].report(turn{}, outcomeRejected, 0) // a 4xx: iDenfy answers
	fs[1].report(turn{}, outcomeUnavailable, 0)
	if fs[0].open() || fs[1].open() {
		t.Fatal("the breaker opened on failures that were not 3 in a row within 10s")
	}
}

// An abandoned probe (the call never went) lets the next caller probe at
// once instead of a probe interval later.
func TestFleetAbandonedProbeFreesTheTurn(t *testing.T) {
	clock := newManualClock()
	fs := startFleets(t, 1, fleetSetup{clock: clock, br: Breaker{N: 1, Window: 10 * time.Second}, probe: 5 * time.Second})
	f := fs[0]
	f.report(turn{}, outcomeUnavailable, 0)
	clock.Advance(5 * time.Second)
	tn, err := f.admit(context.Background(), false)
	if err != nil || !tn.probe {
		t.Fatalf("admit when the probe is due = %+v, %v; want the probe turn", tn, err)
	}
	f.report(tn, outcomeAbandoned, 0)
	if tn, err := f.admit(context.Background(), false); err != nil || !tn.probe {
		t.Fatalf("admit after an abandoned probe = %+v, %v; want the probe turn again", tn, err)
	}
}

// An open breaker refuses at once even while the fleet is paused: a
// request learns within milliseconds, not after the pause.
func TestFleetOpenBreakerRefusesDuringAPause(t *testing.T) {
	clock := newManualClock()
	fs := startFleets(t, 1, fleetSetup{clock: clock, br: Breaker{N: 1, Window: 10 * time.Second}, probe: 5 * time.Second})
	f := fs[0]
	f.report(turn{}, outcomeUnavailable, 0)
	f.report(turn{}, outcomeRateLimited, time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := f.admit(withTimeout(t, time.Hour), true)
		done <- err
	}()
	select {
	case err := <-done:
		if r := refusal(err); r == nil || r.Reason != refusedBreakerOpen {
			t.Errorf("admit while open and paused = %v, want a breaker_open refusal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("admit while open and paused waits, want a refusal at once")
	}
}

// A prober that dies holds the probe turn for one interval only.
func TestFleetProbeOfADeadWorkerPasses(t *testing.T) {
	clock := newManualClock()
	fs := startFleets(t, 2, fleetSetup{clock: clock, br: Breaker{N: 1, Window: 10 * time.Second}, probe: 5 * time.Second})
	fs[0].report(turn{}, outcomeUnavailable, 0)
	clock.Advance(5 * time.Second)
	if tn, err := fs[0].admit(context.Background(), false); err != nil || !tn.probe {
		t.Fatalf("admit when the probe is due = %+v, %v; want the probe turn", tn, err)
	}
	fs[0].stop() // dies with the probe under way
	fs[0].nc.Close()
	eventually(t, "fleet 1 sees the probe under way", func() bool {
		fs[1].mu.Lock()
		defer fs[1].mu.Unlock()
		return fs[1].breaker.val.State == breakerHalfOpen
	})
	if _, err := fs[1].admit(context.Background(), false); refusal(err) == nil {
		t.Fatalf("admit during another worker's probe = %v, want a refusal", err)
	}
	clock.Advance(5 * time.Second)
	if tn, err := fs[1].admit(context.Background(), false); err != nil || !tn.probe {
		t.Fatalf("admit a probe interval after the prober died = %+v, %v; want the probe turn", tn, err)
	}
}

// With no rate limit and the breaker closed, admitting and reporting a
// success cost no allocation and no NATS message.
func TestFleetIdlePathIsFree(t *testing.T) {
	fs := startFleets(t, 1, fleetSetup{clock: systemClock{}})
	f := fs[0]
	before := f.nc.Stats().OutMsgs
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		tn, err := f.admit(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		f.report(tn, outcomeSuccess, 0)
	})
	if allocs != 0 {
		t.Errorf("admit and report on the idle path: %v allocations, want 0", allocs)
	}
	if sent := f.nc.Stats().OutMsgs - before; sent != 0 {
		t.Errorf("admit and report on the idle path sent %d NATS messages, want 0", sent)
	}
}

func BenchmarkFleetAdmitIdle(b *testing.B) {
	ns := natstest.RunServer(b, nil)
	nc := natstest.Connect(b, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, fleetBucketConfig("idenfy_phone", 1))
	if err != nil {
		b.Fatal(err)
	}
	f := newFleet(kv, nc, "w", RateLimit{}, Breaker{}, 0, systemClock{}, zerolog.Nop())
	if err := f.start(ctx); err != nil {
		b.Fatal(err)
	}
	defer f.stop()
	before := nc.Stats().OutMsgs
	b.ReportAllocs()
	for b.Loop() {
		tn, err := f.admit(ctx, false)
		if err != nil {
			b.Fatal(err)
		}
		f.report(tn, outcomeSuccess, 0)
	}
	b.ReportMetric(float64(nc.Stats().OutMsgs-before)/float64(b.N), "nats-msgs/op")
}

func TestCallOutcomeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want callOutcome
	}{
		{name: "success", err: nil, want: outcomeSuccess},
		{name: "429", err: &idenfy.APIError{Status: 429}, want: outcomeRateLimited},
		{name: "400 TOO_MANY_REQUESTS", err: &idenfy.APIError{Status: 400, Identifier: "TOO_MANY_REQUESTS"}, want: outcomeRateLimited},
		{name: "500", err: &idenfy.APIError{Status: 500}, want: outcomeUnavailable},
		{name: "501", err: &idenfy.APIError{Status: 501}, want: outcomeUnavailable},
		{name: "503", err: &idenfy.APIError{Status: 503}, want: outcomeUnavailable},
		{name: "timeout", err: &idenfy.TransportError{Op: "send-sms", Written: true, Err: context.DeadlineExceeded}, want: outcomeUnavailable},
		{name: "connection refused", err: &idenfy.TransportError{Op: "send-sms", Err: syscall.ECONNREFUSED}, want: outcomeUnavailable},
		{name: "unreadable 200", err: &idenfy.ResponseError{Status: 200, Reason: "not JSON"}, want: outcomeUnavailable},
		{name: "cancelled", err: &idenfy.TransportError{Op: "send-sms", Err: context.Canceled}, want: outcomeAbandoned},
		{name: "400", err: &idenfy.APIError{Status: 400, Identifier: "BAD_VALUE"}, want: outcomeRejected},
		{name: "401", err: &idenfy.APIError{Status: 401}, want: outcomeRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := callOutcomeOf(tt.err); got != tt.want {
				t.Errorf("callOutcomeOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestFleetRefusalRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 5 * time.Second: 5} {
		if got := (&fleetRefusal{RetryAfter: d}).retryAfterSeconds(); got != want {
			t.Errorf("fleetRefusal{RetryAfter: %v}.retryAfterSeconds() = %d, want %d", d, got, want)
		}
	}
}

func TestParseBreaker(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  Breaker
		fails bool
	}{
		{name: "default", in: "", want: DefaultBreaker},
		{name: "explicit", in: "3/30s", want: Breaker{N: 3, Window: 30 * time.Second}},
		{name: "minutes", in: "10/1m", want: Breaker{N: 10, Window: time.Minute}},
		{name: "off", in: "off", want: Breaker{Off: true}},
		{name: "OFF", in: "OFF", want: Breaker{Off: true}},
		{name: "zero count", in: "0/10s", fails: true},
		{name: "no window", in: "5", fails: true},
		{name: "short window", in: "5/100ms", fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBreaker(tt.in)
			if (err != nil) != tt.fails || got != tt.want {
				t.Errorf("ParseBreaker(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.fails)
			}
		})
	}
	for in, want := range map[string]time.Duration{"": DefaultBreakerProbe, "2s": 2 * time.Second, "1m": time.Minute} {
		if got, err := ParseBreakerProbe(in); err != nil || got != want {
			t.Errorf("ParseBreakerProbe(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0s", "500ms", "soon"} {
		if got, err := ParseBreakerProbe(in); err == nil {
			t.Errorf("ParseBreakerProbe(%q) = %v, want an error", in, got)
		}
	}
}

// TestJobWaitsForAnOpenBreakerUntilItsMaxAge: a job's turn waits out an
// open breaker, but not past the job's max age: then it is answered
// expired. A request is refused at once, with when to ask again.
func TestJobWaitsForAnOpenBreakerUntilItsMaxAge(t *testing.T) {
	clock := newManualClock()
	fs := startFleets(t, 1, fleetSetup{clock: clock, logs: &logBuffer{}, br: Breaker{N: 1, Window: time.Minute}, probe: time.Hour})
	fs[0].report(turn{}, outcomeUnavailable, 0)
	eventually(t, "the breaker open", fs[0].open)
	w := &Worker{fleet: fs[0].fleet, cfg: Config{JobMaxAge: time.Minute}}

	request := &task{op: opSend, intake: intakeRequest}
	_, err := w.takeTurn(context.Background(), w.turnDeadline(request), request)
	var r *fleetRefusal
	if !errors.As(err, &r) || r.Reason != refusedBreakerOpen {
		t.Errorf("a request's turn with the breaker open = %v, want refused: the breaker is open", err)
	}

	// Published a minute ago, less 200ms: its max age ends while it waits.
	job := &task{op: opSend, intake: intakeJob, job: &jobDelivery{published: time.Now().Add(-time.Minute + 200*time.Millisecond)}}
	_, err = w.takeTurn(context.Background(), w.turnDeadline(job), job)
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != messages.CodeExpired {
		t.Errorf("a job's turn with the breaker open past its max age = %v, want expired", err)
	}
	if n := w.breakerWaits.Load(); n != 0 {
		t.Errorf("breaker waits after the job gave up = %d, want 0", n)
	}
}
