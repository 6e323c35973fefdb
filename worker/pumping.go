package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// PumpingGuard pauses sends to a range of numbers (a number without its
// last 3 digits) once it had N sends within Window of which fewer than 1 in
// 5 were verified: SMS pumping texts many numbers of a range whose operator
// shares the fee, and nobody ever types a code. The zero value is off.
type PumpingGuard struct {
	N      int
	Window time.Duration
}

// DefaultPumpingGuard is the pumping guard when none is configured.
var DefaultPumpingGuard = PumpingGuard{N: 20, Window: time.Hour}

// MaxPumpingGuardN bounds PumpingGuard.N: every send to a range rewrites its
// record, which holds up to 2N sends.
const MaxPumpingGuardN = 1000

func (g PumpingGuard) String() string {
	if g.N == 0 {
		return "off"
	}
	return fmt.Sprintf("%d/%s", g.N, formatWindow(g.Window))
}

// ParsePumpingGuard reads "20/1h"; "off" (or "") turns the guard off.
func ParsePumpingGuard(s string) (PumpingGuard, error) {
	if s = strings.TrimSpace(s); s == "" || strings.EqualFold(s, "off") {
		return PumpingGuard{}, nil
	}
	n, window, err := parseRate(s)
	if err != nil {
		return PumpingGuard{}, fmt.Errorf("%w, or off", err)
	}
	if n > MaxPumpingGuardN {
		return PumpingGuard{}, fmt.Errorf("%q: count %d is over %d", s, n, MaxPumpingGuardN)
	}
	return PumpingGuard{N: n, Window: window}, nil
}

// A range is paused while fewer than 1 in verifiedShare of its sends in the
// window were verified.
const verifiedShare = 5

// rangeSweepInterval is how often paused ranges are looked at again, so that
// a range nobody sends to any more is released (logged, and counted off the
// gauge) as the window moves on. Sends are always judged on the spot; this
// only makes the log and the gauge timely.
const rangeSweepInterval = 5 * time.Second

// rangesBucketConfig is the KV bucket of the pumping guard, named after the
// outcomes bucket: one key per range, forgotten a window after its last
// write, which is never earlier than its newest send.
func rangesBucketConfig(bucket string, replicas int, g PumpingGuard) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket + "_ranges",
		Description: "idenfy-worker pumping guard: recent sends per number range",
		TTL:         g.Window,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// rangeValue is the value of a range's key. It holds no number and no
// range: the key is a keyed hash of the range, a send is known by a keyed
// hash of its request_id, and the region and masked range are for logs.
type rangeValue struct {
	Region string      `json:"region,omitempty"`
	Masked string      `json:"masked,omitempty"`
	Sends  []rangeSend `json:"sends"`
}

// rangeSend is one send to a range, oldest first.
type rangeSend struct {
	At       int64  `json:"at"` // Unix milliseconds
	ID       string `json:"id"` // keyed hash of the request_id
	Verified bool   `json:"v,omitempty"`
}

// rangeState is this worker's view of one range's key.
type rangeState struct {
	rev    uint64
	value  rangeValue
	paused bool
}

// rangeGuard is the pumping guard of one worker. Every worker watches the
// ranges bucket, so that the check before a send is local (no round trip);
// a send that got a request_id adds itself to its range with one
// compare-and-swap on the revision this worker holds, and a verify that
// succeeded marks its send with one more. Only a lost race costs more: a
// read, and the write again. A nil *rangeGuard is off: it allows
// everything and records nothing.
//
// Decisions lag by the sends in flight: sends checked at once, on any
// workers, all pass before any of them is recorded, so a range may take N
// plus the sends in flight (and the few milliseconds of the watch) before
// it pauses. A paused range records no more sends, so its sends age out
// and it reopens a window after the N-th newest: pumping gets at most
// about N texts per range and window through.
//
// Memory: at most 2N sends per range (the oldest give way), and no more
// ranges than had sends within the window. Measured with idenfy-bench (a
// range of its own for every send, the worst case), a send costs about 0.7
// KiB of the view with its range and index entry: 10,000 sends an hour hold
// about 7 MB, 100 a second about 250 MB (README, "Anti-pumping").
type rangeGuard struct {
	kv    *bucket
	cfg   PumpingGuard
	hash  func(domain, value string) string
	clock Clock
	log   zerolog.Logger
	gauge prometheus.GaugeFunc

	mu      sync.Mutex
	ranges  map[string]*rangeState // by KV key
	sends   map[string]string      // hashed request_id → KV key of its range
	pending map[string][]*rangeOp  // by KV key: changes waiting for this process's next write
	npaused int

	// turns orders the writes of one range within the process (a range
	// maps to one of them; ranges sharing one take turns too).
	turns [32]chan struct{}

	cancel  context.CancelFunc // under mu; nil when not started
	running sync.WaitGroup     // the watch and the sweep
}

// newRangeGuard returns the guard for cfg, or nil when cfg is off. kv is
// the bucket of rangesBucketConfig; hash is the worker's keyed hash.
func newRangeGuard(kv *bucket, cfg PumpingGuard, hash func(domain, value string) string, clock Clock, log zerolog.Logger) *rangeGuard {
	if cfg.N == 0 {
		return nil
	}
	g := &rangeGuard{
		kv: kv, cfg: cfg, hash: hash, clock: clock, log: log,
		ranges:  make(map[string]*rangeState),
		sends:   make(map[string]string),
		pending: make(map[string][]*rangeOp),
	}
	for i := range g.turns {
		g.turns[i] = make(chan struct{}, 1)
	}
	g.gauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "idenfy_worker_pumping_ranges_paused",
		Help: "Number ranges whose sends the pumping guard refuses, as this worker sees them.",
	}, func() float64 {
		g.sweep()
		g.mu.Lock()
		defer g.mu.Unlock()
		return float64(g.npaused)
	})
	return g
}

// collectors are the guard's metrics, for the worker's registerer.
func (g *rangeGuard) collectors() []prometheus.Collector {
	if g == nil {
		return nil
	}
	return []prometheus.Collector{g.gauge}
}

// start watches the bucket and returns once the values it holds are
// loaded. The watch lives until stop, not until ctx ends: ctx bounds only
// the loading.
func (g *rangeGuard) start(ctx context.Context) error {
	if g == nil {
		return nil
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := g.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("watching KV bucket %s: %w", g.kv.Bucket(), err)
	}
	loaded := make(chan struct{})
	g.running.Go(func() { g.watch(wctx, w, loaded) })
	g.running.Go(func() { g.sweepEvery(wctx) })
	select {
	case <-loaded:
		g.mu.Lock()
		g.cancel = cancel
		g.mu.Unlock()
		return nil
	case <-ctx.Done():
		// Start may be tried again: this try leaves nothing running.
		cancel()
		g.running.Wait()
		return fmt.Errorf("loading KV bucket %s: %w", g.kv.Bucket(), ctx.Err())
	}
}

// stop ends the watch and the sweep, and waits for them to end. The guard
// may be started again.
func (g *rangeGuard) stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	cancel := g.cancel
	g.cancel = nil
	g.mu.Unlock()
	if cancel != nil {
		cancel()
		g.running.Wait()
	}
}

// watch applies the bucket's updates to the view until ctx ends. Should
// the watch end on its own (a consumer lost with its server), it is set up
// again: the watch starts with every value, so the view catches up.
func (g *rangeGuard) watch(ctx context.Context, w jetstream.KeyWatcher, loaded chan<- struct{}) {
	for {
		g.follow(ctx, w, loaded)
		loaded = nil
		for ctx.Err() == nil {
			g.log.Warn().Str("bucket", g.kv.Bucket()).Msg("the pumping guard's watch of the ranges bucket ended; setting it up again")
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
			var err error
			if w, err = g.kv.WatchAll(ctx); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// follow applies one watch's updates until it ends or ctx does; loaded,
// when not nil, is closed once the watch has delivered every stored value.
func (g *rangeGuard) follow(ctx context.Context, w jetstream.KeyWatcher, loaded chan<- struct{}) {
	updates := w.Updates()
	for {
		select {
		case e, ok := <-updates:
			if !ok {
				return
			}
			if e == nil {
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
				continue
			}
			g.apply(e.Key(), e.Revision(), e.Operation(), e.Value())
		case <-ctx.Done():
			_ = w.Stop()
			// Drained, so that the client's delivery, which may be
			// blocked on a full channel, gets to close it.
			for range updates {
			}
			return
		}
	}
}

// sweepEvery ticks on the wall clock on purpose: a test Clock may move
// itself when waited on. What the sweep decides reads the Clock.
func (g *rangeGuard) sweepEvery(ctx context.Context) {
	t := time.NewTicker(rangeSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.sweep()
		}
	}
}

// sweep judges every range again and forgets those with no send left in
// the window.
func (g *rangeGuard) sweep() {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for key, st := range g.ranges {
		g.evaluate(key, st, now)
		if len(st.value.Sends) == 0 {
			delete(g.ranges, key)
		}
	}
}

// check answers suspected_fraud when phone's range is paused. It reads only
// this worker's view: no round trip.
func (g *rangeGuard) check(phone string) *messages.Error {
	if g == nil {
		return nil
	}
	r, ok := rangeOf(phone)
	if !ok {
		return nil
	}
	key := g.key(r)
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.ranges[key]
	if st == nil || !g.evaluate(key, st, g.clock.Now()) {
		return nil
	}
	sends, verified := st.counts()
	return messages.NewError(messages.CodeSuspectedFraud, fmt.Sprintf(
		"sends to this number's range are paused: %d sends to it within %s, %d of them verified",
		sends, formatWindow(g.cfg.Window), verified))
}

// rangeOp is a change to a range's record waiting for this process's next
// write of it: a send to add, or a send to mark verified.
type rangeOp struct {
	send     *rangeSend
	verified string // ID of the send to mark
	region   string
	masked   string
	done     chan error // receives the outcome of the write that carried it
}

// recordSend adds a send that reached iDenfy and got requestID to its
// range. Recording the same requestID again changes nothing.
func (g *rangeGuard) recordSend(ctx context.Context, phone, requestID string) error {
	if g == nil {
		return nil
	}
	r, ok := rangeOf(phone)
	if !ok {
		return nil
	}
	key, id := g.key(r), g.sendID(requestID)
	g.mu.Lock()
	st := g.ranges[key]
	if st != nil && slices.ContainsFunc(st.value.Sends, func(s rangeSend) bool { return s.ID == id }) {
		g.mu.Unlock()
		return nil
	}
	// The region, for the log lines of a pause, is the number's once per
	// range: deciding it is libphonenumber's work, not to be done per send.
	region := ""
	if st != nil {
		region = st.value.Region
	}
	g.mu.Unlock()
	if region == "" {
		region = countryOf(phone)
	}
	send := rangeSend{At: g.clock.Now().UnixMilli(), ID: id}
	return g.change(ctx, key, &rangeOp{send: &send, region: region, masked: maskRange(phone)})
}

// recordVerified marks the send of requestID verified. It costs nothing
// when this worker does not know the send (sent before the window, or
// before the guard was on) or knows it verified already.
func (g *rangeGuard) recordVerified(ctx context.Context, requestID string) error {
	if g == nil {
		return nil
	}
	id := g.sendID(requestID)
	g.mu.Lock()
	key, ok := g.sends[id]
	if st := g.ranges[key]; ok && st != nil {
		i := slices.IndexFunc(st.value.Sends, func(s rangeSend) bool { return s.ID == id })
		ok = i >= 0 && !st.value.Sends[i].Verified
	} else {
		ok = false
	}
	g.mu.Unlock()
	if !ok {
		return nil
	}
	return g.change(ctx, key, &rangeOp{verified: id})
}

// change writes op into key's record: one compare-and-swap, more only when
// another worker wrote the range in between. Within the process, writes
// of one range take turns and each carries every change waiting for it,
// so that a burst of sends to one range costs a round trip per turn, not a
// lost race per send.
func (g *rangeGuard) change(ctx context.Context, key string, op *rangeOp) error {
	op.done = make(chan error, 1)
	g.mu.Lock()
	g.pending[key] = append(g.pending[key], op)
	g.mu.Unlock()
	turn := g.turns[turnOf(key, len(g.turns))]
	select {
	case turn <- struct{}{}:
	case <-ctx.Done():
		g.withdraw(key, op)
		return ctx.Err()
	}
	defer func() { <-turn }()
	select {
	case err := <-op.done:
		return err // carried by the write of the turn before
	default:
	}
	g.mu.Lock()
	ops := g.pending[key]
	delete(g.pending, key)
	g.mu.Unlock()
	err := g.writeOps(ctx, key, ops)
	for _, o := range ops {
		o.done <- err
	}
	return <-op.done
}

// withdraw takes back an op whose caller gave up waiting for its turn,
// unless a write already carries it.
func (g *rangeGuard) withdraw(key string, op *rangeOp) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ops := slices.DeleteFunc(g.pending[key], func(o *rangeOp) bool { return o == op })
	if len(ops) == 0 {
		delete(g.pending, key)
	} else {
		g.pending[key] = ops
	}
}

func (g *rangeGuard) writeOps(ctx context.Context, key string, ops []*rangeOp) error {
	var read uint64 // revision of the last read, for a record the view does not keep
	absent := false
	for range 20 {
		rev, value, changed := g.applyOps(key, ops, read)
		if !changed {
			return nil
		}
		err := g.write(ctx, key, rev, absent, value)
		if !isConflict(err) {
			return err
		}
		if read, absent, err = g.reload(ctx, key); err != nil {
			return err
		}
	}
	return errors.New("pumping guard: range record stayed contended after 20 tries")
}

// applyOps returns the range's revision in this worker's view (read when
// the view keeps none: a record with no send left in the window) and its
// value with ops applied; changed is false when they change nothing.
func (g *rangeGuard) applyOps(key string, ops []*rangeOp, read uint64) (rev uint64, value rangeValue, changed bool) {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	rev = read
	if st := g.ranges[key]; st != nil {
		g.evaluate(key, st, now)
		rev, value = st.rev, st.value
		value.Sends = slices.Clone(st.value.Sends)
	}
	for _, op := range ops {
		if op.send != nil {
			if !slices.ContainsFunc(value.Sends, func(s rangeSend) bool { return s.ID == op.send.ID }) {
				value.Sends = append(value.Sends, *op.send)
				value.Region, value.Masked = op.region, op.masked
				changed = true
			}
			continue
		}
		if i := slices.IndexFunc(value.Sends, func(s rangeSend) bool { return s.ID == op.verified }); i >= 0 && !value.Sends[i].Verified {
			value.Sends[i].Verified = true
			changed = true
		}
	}
	if excess := len(value.Sends) - 2*g.cfg.N; excess > 0 {
		value.Sends = value.Sends[excess:]
	}
	return rev, value, changed
}

// write stores value under key if its revision is still rev, and takes the
// value into this worker's view at once, before the watch echoes it.
// absent says the key has no value, possibly with a delete marker in its
// place, which only the client's Create writes over.
func (g *rangeGuard) write(ctx context.Context, key string, rev uint64, absent bool, value rangeValue) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	if absent {
		rev, err = g.kv.Create(ctx, key, data)
	} else {
		rev, err = g.kv.put(ctx, key, data, rev)
	}
	if err != nil {
		if !isConflict(err) {
			err = fmt.Errorf("pumping guard: writing a range record: %w", err)
		}
		return err
	}
	g.apply(key, rev, jetstream.KeyValuePut, data)
	return nil
}

// reload reads key after a lost race, and returns its revision; absent
// reports that it has no value.
func (g *rangeGuard) reload(ctx context.Context, key string) (rev uint64, absent bool, err error) {
	e, err := g.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		g.mu.Lock()
		g.forget(key)
		g.mu.Unlock()
		return 0, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("pumping guard: reading a range record: %w", err)
	}
	g.apply(key, e.Revision(), e.Operation(), e.Value())
	return e.Revision(), false, nil
}

// apply takes a revision of key into this worker's view, unless the view
// holds a later one. A delete or purge empties the range; a damaged value
// too, rather than pausing it for good.
func (g *rangeGuard) apply(key string, rev uint64, op jetstream.KeyValueOp, data []byte) {
	var value rangeValue
	if op == jetstream.KeyValuePut && json.Unmarshal(data, &value) != nil {
		value = rangeValue{}
	}
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.ranges[key]
	switch {
	case st != nil && rev <= st.rev:
		return
	case st == nil && !slices.ContainsFunc(value.Sends, func(s rangeSend) bool { return s.At > now.Add(-g.cfg.Window).UnixMilli() }):
		// Nothing left to count: a delete, or a late echo of a range the
		// sweep forgot.
		return
	case st == nil:
		st = &rangeState{}
		g.ranges[key] = st
	}
	g.unindex(st)
	st.rev, st.value = rev, value
	for _, s := range st.value.Sends {
		g.sends[s.ID] = key
	}
	g.evaluate(key, st, now)
}

// forget drops key from the view, released first if it was paused.
func (g *rangeGuard) forget(key string) {
	st := g.ranges[key]
	if st == nil {
		return
	}
	g.unindex(st)
	st.value.Sends = nil
	g.evaluate(key, st, g.clock.Now())
	delete(g.ranges, key)
}

func (g *rangeGuard) unindex(st *rangeState) {
	for _, s := range st.value.Sends {
		delete(g.sends, s.ID)
	}
}

// evaluate drops the sends that left the window and reports whether the
// range is paused, logging when that changes. A worker logs each pause and
// each release once, however many sends it refuses in between. It is
// called with g.mu held.
func (g *rangeGuard) evaluate(key string, st *rangeState, now time.Time) bool {
	cut := now.Add(-g.cfg.Window).UnixMilli()
	kept := st.value.Sends[:0]
	for _, s := range st.value.Sends {
		if s.At > cut {
			kept = append(kept, s)
		} else {
			delete(g.sends, s.ID)
		}
	}
	clear(st.value.Sends[len(kept):])
	st.value.Sends = kept
	sends, verified := st.counts()
	paused := sends >= g.cfg.N && verified*verifiedShare < sends
	if paused == st.paused {
		return paused
	}
	st.paused = paused
	ev := g.log.Info()
	msg := "pumping guard released a number range"
	if paused {
		g.npaused++
		ev, msg = g.log.Warn(), "pumping guard paused a number range: many sends, few verified"
	} else {
		g.npaused--
	}
	ev.Str("region", st.value.Region).Str("range", st.value.Masked).Str("range_key", key).
		Int("sends", sends).Int("verified", verified).Str("window", formatWindow(g.cfg.Window)).Msg(msg)
	return paused
}

func (st *rangeState) counts() (sends, verified int) {
	for _, s := range st.value.Sends {
		if s.Verified {
			verified++
		}
	}
	return len(st.value.Sends), verified
}

// key is the KV key of a range: a keyed hash, so that the bucket names no
// range.
func (g *rangeGuard) key(r string) string { return "r." + g.hash("range", r) }

func (g *rangeGuard) sendID(requestID string) string { return g.hash("range_send", requestID) }

// turnOf spreads keys over n turns (FNV-1a).
func turnOf(key string, n int) int {
	h := uint32(2166136261)
	for i := range len(key) {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return int(h % uint32(n))
}

// rangeOf returns the range of an E.164 number: the number without its
// last 3 digits. A number too short to have a range beyond its calling
// code has none.
func rangeOf(phone string) (string, bool) {
	cc := messages.CallingCode(phone)
	if cc == "" || len(phone)-1-len(cc) <= 3 {
		return "", false
	}
	return phone[:len(phone)-3], true
}

// maskRange names a range in logs by its calling code alone: the logs of
// a pause must not narrow a number down.
func maskRange(phone string) string {
	return "+" + messages.CallingCode(phone) + "•••"
}
