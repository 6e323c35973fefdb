package worker

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/internal/clocktest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// lockedBuffer is a log sink safe for the watch goroutine and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pumpingCluster is an embedded NATS server with the ranges bucket, and
// guards that share it, each on its own connection as separate workers
// would be.
type pumpingCluster struct {
	t     *testing.T
	url   string
	cfg   PumpingGuard
	clock *clocktest.Clock
	kv    jetstream.KeyValue
	hash  func(domain, value string) string
}

func newPumpingCluster(t *testing.T, cfg PumpingGuard) *pumpingCluster {
	t.Helper()
	ns := natstest.RunServer(t, nil)
	nc := natstest.Connect(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, rangesBucketConfig("test", 1, cfg))
	if err != nil {
		t.Fatal(err)
	}
	s := newHasher([]byte("test key"))
	return &pumpingCluster{t: t, url: ns.ClientURL(), cfg: cfg, clock: clocktest.New(time.Now()), kv: kv, hash: s.sum}
}

// guard starts a guard on a connection of its own, logging into log.
func (c *pumpingCluster) guard(log *lockedBuffer) *rangeGuard {
	c.t.Helper()
	nc := natstest.Connect(c.t, c.url)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "test_ranges")
	if err != nil {
		c.t.Fatal(err)
	}
	logger := zerolog.New(zerolog.NewTestWriter(c.t))
	if log != nil {
		logger = zerolog.New(log)
	}
	g := newRangeGuard(newBucket(nc, kv), c.cfg, c.hash, c.clock, logger)
	if err := g.start(ctx); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(g.stop)
	return g
}

// send records a send to phone with a request_id of its own.
func send(t *testing.T, g *rangeGuard, phone, requestID string) {
	t.Helper()
	if err := g.recordSend(context.Background(), phone, requestID); err != nil {
		t.Fatalf("recordSend(%q, %q) = %v", phone, requestID, err)
	}
}

func verify(t *testing.T, g *rangeGuard, requestID string) {
	t.Helper()
	if err := g.recordVerified(context.Background(), requestID); err != nil {
		t.Fatalf("recordVerified(%q) = %v", requestID, err)
	}
}

func requestID(i int) string { return fmt.Sprintf("req-%032d", i) }

// pausedGauge scrapes the guard's gauge as Prometheus would.
func pausedGauge(t *testing.T, g *rangeGuard) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(g.collectors()...)
	families, err := reg.Gather()
	if err != nil || len(families) != 1 || families[0].GetName() != "idenfy_worker_pumping_ranges_paused" {
		t.Fatalf("Gather() = %v, %v; want idenfy_worker_pumping_ranges_paused", families, err)
	}
	return families[0].GetMetric()[0].GetGauge().GetValue()
}

func paused(g *rangeGuard, phone string) bool {
	e := g.check(phone)
	return e != nil && e.Code == messages.CodeSuspectedFraud
}

func TestPumpingGuardPausesARangeOfUnverifiedSends(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 5, Window: time.Hour})
	g := c.guard(nil)
	for i := range 4 {
		send(t, g, fmt.Sprintf("+3706000100%d", i), requestID(i))
	}
	if e := g.check("+37060001009"); e != nil {
		t.Fatalf("check after 4 sends = %v, want nil", e)
	}
	send(t, g, "+37060001004", requestID(4))
	e := g.check("+37060001009")
	if e == nil || e.Code != messages.CodeSuspectedFraud || e.Retryable {
		t.Fatalf("check after 5 unverified sends = %v, want suspected_fraud, not retryable", e)
	}
	if strings.Contains(e.Message, "37060001") {
		t.Errorf("check = %q, which quotes the range", e.Message)
	}
	if paused(g, "+37060002009") {
		t.Errorf("check(%q) refused a neighbouring range", "+37060002009")
	}
	if paused(g, "+447911123456") {
		t.Errorf("check(%q) refused another country", "+447911123456")
	}
}

func TestPumpingGuardSparesARangeWhoseCodesGetVerified(t *testing.T) {
	tests := []struct {
		name       string
		sends      int
		verified   int
		wantPaused bool
	}{
		{name: "1 of 5", sends: 5, verified: 1},
		{name: "2 of 10", sends: 10, verified: 2},
		{name: "1 of 10", sends: 10, verified: 1, wantPaused: true},
		{name: "0 of 5", sends: 5, wantPaused: true},
		{name: "all of 10", sends: 10, verified: 10},
		{name: "8 of 40 (capped at 10 newest)", sends: 40, verified: 8, wantPaused: true},
		{name: "newest 2 of 10 verified", sends: 40, verified: -2},
	}
	c := newPumpingCluster(t, PumpingGuard{N: 5, Window: time.Hour})
	g := c.guard(nil)
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := fmt.Sprintf("+370600%02d", n)
			for i := range tt.sends {
				id := fmt.Sprintf("%s-%02d-%032d", t.Name(), n, i)
				send(t, g, fmt.Sprintf("%s%03d", prefix, i), id)
				// A negative count verifies the newest sends, the others
				// the oldest.
				if (tt.verified > 0 && i < tt.verified) || (tt.verified < 0 && i >= tt.sends+tt.verified) {
					verify(t, g, id)
				}
			}
			if got := paused(g, prefix+"999"); got != tt.wantPaused {
				t.Errorf("paused after %d sends, %d verified = %v, want %v", tt.sends, tt.verified, got, tt.wantPaused)
			}
		})
	}
}

func TestPumpingGuardReleasesARangeAsTheWindowMoves(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 5, Window: time.Hour})
	var log lockedBuffer
	g := c.guard(&log)
	for i := range 3 {
		send(t, g, "+37060001005", requestID(i))
	}
	c.clock.Advance(30 * time.Minute)
	for i := 3; i < 5; i++ {
		send(t, g, "+37060001005", requestID(i))
	}
	for range 10 {
		if !paused(g, "+37060001005") {
			t.Fatal("check after 5 unverified sends within the hour = nil, want suspected_fraud")
		}
	}
	if got := pausedGauge(t, g); got != 1 {
		t.Errorf("idenfy_worker_pumping_ranges_paused = %v, want 1", got)
	}
	c.clock.Advance(30*time.Minute + time.Millisecond)
	if paused(g, "+37060001005") {
		t.Fatal("check once the 3 oldest sends left the window = suspected_fraud, want nil")
	}
	if got := pausedGauge(t, g); got != 0 {
		t.Errorf("idenfy_worker_pumping_ranges_paused = %v, want 0", got)
	}
	out := log.String()
	if n := strings.Count(out, "paused a number range"); n != 1 {
		t.Errorf("log has %d pause lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "released a number range"); n != 1 {
		t.Errorf("log has %d release lines, want 1:\n%s", n, out)
	}
	for _, want := range []string{`"region":"LT"`, `"range":"+370•••"`, `"range_key":"r.`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "60001") {
		t.Errorf("log quotes the range:\n%s", out)
	}
}

// A range paused by no send any more is released by the sweep, so that the
// gauge and the log follow the window without traffic.
func TestPumpingGuardSweepReleasesAnIdleRange(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 2, Window: time.Minute})
	var log lockedBuffer
	g := c.guard(&log)
	send(t, g, "+447400123456", requestID(1))
	send(t, g, "+447400123457", requestID(2))
	if !strings.Contains(log.String(), "paused a number range") {
		t.Fatalf("log after the pausing send lacks the pause:\n%s", log.String())
	}
	c.clock.Advance(time.Minute)
	g.sweep()
	if out := log.String(); !strings.Contains(out, "released a number range") || !strings.Contains(out, `"region":"GB"`) {
		t.Errorf("log after the sweep lacks the release:\n%s", out)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ranges) != 0 || len(g.sends) != 0 || g.npaused != 0 {
		t.Errorf("after the sweep the guard holds %d ranges, %d sends, %d paused; want none", len(g.ranges), len(g.sends), g.npaused)
	}
}

// A verify late in the window keeps a range's record in the bucket after
// its sends left the window, and after the sweep forgot it: the next send
// finds the record's revision and writes over it.
func TestPumpingGuardWritesOverARecordThatOutlivedItsSends(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 2, Window: time.Hour})
	g := c.guard(nil)
	send(t, g, "+37060001005", requestID(1))
	c.clock.Advance(50 * time.Minute)
	verify(t, g, requestID(1))
	c.clock.Advance(15 * time.Minute)
	g.sweep()
	send(t, g, "+37060001006", requestID(2))
	send(t, g, "+37060001007", requestID(3))
	if !paused(g, "+37060001008") {
		t.Error("2 unverified sends after the old ones left the window did not pause the range")
	}
}

func TestPumpingGuardIsClusterWide(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 5, Window: time.Hour})
	a, b := c.guard(nil), c.guard(nil)
	for i := range 5 {
		send(t, a, fmt.Sprintf("+3706000100%d", i), requestID(i))
	}
	eventually(t, "paused on the other worker", func() bool { return paused(b, "+37060001099") })
	if paused(b, "+37060002099") {
		t.Errorf("another range is paused on the other worker")
	}
	// A verify answered by the other worker counts for the first.
	verify(t, b, requestID(2))
	eventually(t, "released on the first worker", func() bool { return !paused(a, "+37060001099") })
	// A worker started later loads what the bucket holds.
	late := c.guard(nil)
	send(t, late, "+37060001006", requestID(6))
	eventually(t, "six sends on the first worker", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		st := a.ranges[a.key("+37060001")]
		return st != nil && len(st.value.Sends) == 6
	})
	// 1 verified of 6 is under 1 in 5 again.
	if !paused(late, "+37060001099") {
		t.Errorf("range with 1 of 6 sends verified is not paused on the late worker")
	}
}

// Workers writing one range at once lose no send: each write is a
// compare-and-swap, redone on the range's new value when it lost a race.
func TestPumpingGuardConcurrentSendsAreAllCounted(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 100, Window: time.Hour})
	guards := []*rangeGuard{c.guard(nil), c.guard(nil), c.guard(nil)}
	var wg sync.WaitGroup
	for gi, g := range guards {
		for i := range 10 {
			wg.Go(func() {
				if err := g.recordSend(context.Background(), "+37060001005", requestID(gi*100+i)); err != nil {
					t.Errorf("recordSend = %v", err)
				}
			})
		}
	}
	wg.Wait()
	e, err := c.kv.Get(context.Background(), guards[0].key("+37060001"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(e.Value()), `"id"`); n != 30 {
		t.Errorf("range record holds %d sends after 30 concurrent ones, want 30", n)
	}
}

func TestPumpingGuardCountsARequestOnce(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 2, Window: time.Hour})
	g := c.guard(nil)
	for range 3 {
		send(t, g, "+37060001005", requestID(1))
	}
	if paused(g, "+37060001005") {
		t.Error("one request_id recorded 3 times paused its range of N=2")
	}
	verify(t, g, requestID(1))
	verify(t, g, requestID(1))
	verify(t, g, requestID(99)) // unknown: nothing to mark, no error
}

// Deleting a range's key, as an operator lifts a false positive, releases
// it on every worker, and the range counts afresh from there.
func TestPumpingGuardRangeDeletedByHandIsReleased(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 2, Window: time.Hour})
	a, b := c.guard(nil), c.guard(nil)
	send(t, a, "+37060001005", requestID(1))
	send(t, a, "+37060001006", requestID(2))
	eventually(t, "paused on the other worker", func() bool { return paused(b, "+37060001007") })
	if err := c.kv.Delete(context.Background(), a.key("+37060001")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "released on both workers", func() bool {
		return !paused(a, "+37060001007") && !paused(b, "+37060001007")
	})
	verify(t, a, requestID(1)) // forgotten with its range: nothing to mark
	send(t, b, "+37060001007", requestID(3))
	if paused(b, "+37060001007") {
		t.Error("one send after the delete paused the range")
	}
	send(t, a, "+37060001008", requestID(4))
	eventually(t, "paused again on the other worker", func() bool { return paused(b, "+37060001009") })
}

// The bucket names no number and no range, in keys or in values.
func TestPumpingGuardStoresNoNumberInClear(t *testing.T) {
	c := newPumpingCluster(t, PumpingGuard{N: 3, Window: time.Hour})
	g := c.guard(nil)
	phones := []string{"+37060001005", "+37060001006", "+12025550163", "+447911123456"}
	for i, p := range phones {
		send(t, g, p, requestID(i))
		verify(t, g, requestID(i))
	}
	ctx := context.Background()
	keys, err := c.kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Errorf("bucket has %d keys, want 3 (one per range)", len(keys))
	}
	for _, k := range keys {
		e, err := c.kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		stored := k + " " + string(e.Value())
		for i, p := range phones {
			rng, _ := rangeOf(p)
			for _, clear := range []string{p, p[1:], rng, rng[1:], p[len(p)-7:], requestID(i)} {
				if strings.Contains(stored, clear) {
					t.Errorf("bucket entry %q holds %q in clear", stored, clear)
				}
			}
		}
	}
}

func TestOffPumpingGuardAllowsEverything(t *testing.T) {
	g := newRangeGuard(nil, PumpingGuard{}, nil, nil, zerolog.Nop())
	if g != nil {
		t.Fatalf("newRangeGuard(off) = %v, want nil", g)
	}
	ctx := context.Background()
	if err := g.start(ctx); err != nil {
		t.Errorf("start = %v", err)
	}
	if e := g.check("+37060001005"); e != nil {
		t.Errorf("check = %v", e)
	}
	if err := g.recordSend(ctx, "+37060001005", requestID(1)); err != nil {
		t.Errorf("recordSend = %v", err)
	}
	if err := g.recordVerified(ctx, requestID(1)); err != nil {
		t.Errorf("recordVerified = %v", err)
	}
	if cs := g.collectors(); cs != nil {
		t.Errorf("collectors = %v, want none", cs)
	}
	g.stop()
}

func TestRangeOf(t *testing.T) {
	tests := []struct {
		name   string
		phone  string
		want   string
		wantOK bool
	}{
		{name: "LT mobile", phone: "+37060001005", want: "+37060001", wantOK: true},
		{name: "US", phone: "+12025550163", want: "+12025550", wantOK: true},
		{name: "short", phone: "+3701234", want: "+3701", wantOK: true},
		{name: "no digits beyond the calling code", phone: "+370123", wantOK: false},
		{name: "not E.164", phone: "37060001005", wantOK: false},
		{name: "empty", phone: "", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := rangeOf(tt.phone)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("rangeOf(%q) = %q, %v; want %q, %v", tt.phone, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParsePumpingGuard(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    PumpingGuard
		wantErr string
	}{
		{name: "the default", in: "20/1h", want: DefaultPumpingGuard},
		{name: "minutes", in: "50/30m", want: PumpingGuard{N: 50, Window: 30 * time.Minute}},
		{name: "a day", in: "100/1d", want: PumpingGuard{N: 100, Window: 24 * time.Hour}},
		{name: "off", in: "off", want: PumpingGuard{}},
		{name: "OFF", in: " OFF ", want: PumpingGuard{}},
		{name: "empty", in: "", want: PumpingGuard{}},
		{name: "no window", in: "20", wantErr: "COUNT/DURATION"},
		{name: "zero", in: "0/1h", wantErr: "positive whole number"},
		{name: "negative", in: "-5/1h", wantErr: "positive whole number"},
		{name: "words", in: "twenty/1h", wantErr: "positive whole number"},
		{name: "bad window", in: "20/1x", wantErr: "at least 1s"},
		{name: "window under a second", in: "20/10ms", wantErr: "at least 1s"},
		{name: "over the bound", in: "1001/1h", wantErr: "over 1000"},
		{name: "disabled spelt otherwise", in: "false", wantErr: "or off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePumpingGuard(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParsePumpingGuard(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParsePumpingGuard(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
	if s := DefaultPumpingGuard.String(); s != "20/1h" {
		t.Errorf("DefaultPumpingGuard.String() = %q, want 20/1h", s)
	}
	if s := (PumpingGuard{}).String(); s != "off" {
		t.Errorf("PumpingGuard{}.String() = %q, want off", s)
	}
}

// BenchmarkPumpingGuardCheck is the cost the guard adds before every send.
func BenchmarkPumpingGuardCheck(b *testing.B) {
	s := newHasher([]byte("test key"))
	g := newRangeGuard(nil, DefaultPumpingGuard, s.sum, clocktest.New(time.Now()), zerolog.Nop())
	for i := range 10 {
		g.apply(g.key("+37060001"), uint64(i+1), jetstream.KeyValuePut,
			fmt.Appendf(nil, `{"sends":[{"at":%d,"id":"x%d"}]}`, time.Now().UnixMilli(), i))
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = g.check("+37060001005")
	}
}
