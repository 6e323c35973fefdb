package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
)

// fleet makes the workers sharing a KV bucket one client of iDenfy, whose
// quota and outages belong to the account, not to a process (README "One
// fleet toward iDenfy"): one rate limit, one pause after a 429, one circuit
// breaker. Their state lives in three keys of the fleet bucket, written
// with compare-and-swap and watched by every worker into an in-memory
// copy, so that deciding whether a call may go makes no round trip unless
// a limit is on or iDenfy is failing.
type fleet struct {
	kv    jetstream.KeyValue
	b     *bucket
	id    string
	clock Clock
	log   zerolog.Logger
	br    Breaker
	probe time.Duration
	lim   *fleetLimiter // nil without a rate limit

	ctx     context.Context // ends with stop
	cancel  context.CancelFunc
	watcher jetstream.KeyWatcher
	done    sync.WaitGroup

	mu      sync.Mutex
	pause   fleetRecord[pauseState]
	breaker fleetRecord[breakerState]
	rate    fleetRecord[rateState]
	// closedCh is closed while the breaker is closed, and replaced by an
	// open channel when it opens.
	closedCh chan struct{}
	// takingProbe is set while a caller of this process competes for the
	// probe turn.
	takingProbe bool
	// pausedBefore is the time spent in pauses that ended; pauseFrom is
	// when the latest pause began here (Unix ns, 0: none yet).
	pausedBefore time.Duration
	pauseFrom    int64

	refused         prometheus.Counter
	rateWaits       prometheus.Counter
	rateWaitSeconds prometheus.Counter
}

// Keys of the fleet bucket.
const (
	keyRate    = "rate"
	keyPause   = "pause"
	keyBreaker = "breaker"
)

// fleetBucketConfig is the fleet bucket of the outcome bucket named bucket.
// File storage, like every bucket of the worker: a memory bucket vanishes
// with a single server's restart, and nothing would make it again while the
// workers run, leaving every copy of the state frozen (an open breaker open
// for good). Its writes are few: a lease of tokens a tenth of a second's
// share at a time, a pause, a breaker's transitions.
func fleetBucketConfig(bucket string, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket + "_fleet",
		Description: "idenfy-worker fleet state: shared rate limit, pause after 429, circuit breaker",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// newFleet returns a fleet on kv (a bucket of fleetBucketConfig); start
// loads its state. br's zero value means DefaultBreaker and probe's
// DefaultBreakerProbe.
func newFleet(kv jetstream.KeyValue, nc *nats.Conn, id string, rate RateLimit, br Breaker, probe time.Duration, clock Clock, log zerolog.Logger) *fleet {
	if br.N == 0 && !br.Off {
		br = DefaultBreaker
	}
	if br.Off {
		br = Breaker{Off: true}
	}
	if probe <= 0 {
		probe = DefaultBreakerProbe
	}
	f := &fleet{
		id: id, clock: clock, log: log, br: br, probe: probe,
		closedCh: make(chan struct{}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idenfy_worker_breaker_refused_total",
			Help: "Calls to iDenfy refused at once because the fleet's circuit breaker is open.",
		}),
		rateWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idenfy_worker_rate_limit_waits_total",
			Help: "Calls to iDenfy that waited for a turn of the fleet's rate limit.",
		}),
		rateWaitSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idenfy_worker_rate_limit_wait_seconds_total",
			Help: "Time calls to iDenfy spent waiting for a turn of the fleet's rate limit.",
		}),
	}
	close(f.closedCh)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	if rate.N > 0 {
		f.lim = newFleetLimiter(f, rate)
	}
	if kv != nil {
		f.attach(nc, kv)
	}
	return f
}

// attach gives the fleet its bucket, once the worker has opened it.
func (f *fleet) attach(nc *nats.Conn, kv jetstream.KeyValue) {
	f.kv, f.b = kv, newBucket(nc, kv)
}

// start loads the fleet's state and keeps it up to date until stop.
func (f *fleet) start(ctx context.Context) error {
	if f.ctx.Err() != nil {
		// Stopped after a failed start: it may start again.
		f.ctx, f.cancel = context.WithCancel(context.Background())
	}
	w, err := f.kv.WatchAll(f.ctx)
	if err != nil {
		f.cancel()
		return fmt.Errorf("worker: watching KV bucket %s: %w", f.kv.Bucket(), err)
	}
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				f.cancel()
				return fmt.Errorf("worker: watching KV bucket %s: the watch ended", f.kv.Bucket())
			}
			if loaded = e == nil; !loaded {
				f.applyEntry(e)
			}
		case <-ctx.Done():
			_ = w.Stop()
			f.cancel()
			return fmt.Errorf("worker: loading KV bucket %s: %w", f.kv.Bucket(), ctx.Err())
		}
	}
	f.watcher = w
	f.done.Add(1)
	go f.watch()
	if f.lim != nil {
		f.done.Add(1)
		go f.lim.run()
	}
	return nil
}

// stop ends the watch and the leasing of tokens; calls waiting in admit
// return errFleetStopped. Tokens leased and not used are forfeited.
func (f *fleet) stop() {
	f.cancel()
	f.done.Wait()
}

// watch applies updates until stop. Should the watch end on its own (its
// consumer lost with a server), it is set up again; a new watch starts with
// every value, so the copy catches up.
func (f *fleet) watch() {
	defer f.done.Done()
	w := f.watcher
	for {
		select {
		case e, ok := <-w.Updates():
			if ok {
				if e != nil {
					f.applyEntry(e)
				}
				continue
			}
			for {
				f.log.Warn().Str("bucket", f.kv.Bucket()).Msg("the watch of the fleet's state ended; setting it up again")
				select {
				case <-time.After(time.Second):
				case <-f.ctx.Done():
					return
				}
				var err error
				if w, err = f.kv.WatchAll(f.ctx); err == nil {
					// The bucket may have been made again, its revisions
					// starting over: the new watch's values win.
					f.mu.Lock()
					f.pause.rev, f.breaker.rev, f.rate.rev = 0, 0, 0
					f.mu.Unlock()
					break
				}
			}
		case <-f.ctx.Done():
			_ = w.Stop()
			return
		}
	}
}

// fleetRecord is the in-memory copy of one fleet key and the revision it was
// read at, which a compare-and-swap write must match.
type fleetRecord[S any] struct {
	val S
	rev uint64
}

func (f *fleet) applyEntry(e jetstream.KeyValueEntry) {
	var data []byte
	if e.Operation() == jetstream.KeyValuePut {
		data = e.Value()
	}
	switch e.Key() {
	case keyRate:
		applyFleetValue(f, e.Key(), data, e.Revision(), f.setRate)
	case keyPause:
		applyFleetValue(f, e.Key(), data, e.Revision(), f.setPause)
	case keyBreaker:
		applyFleetValue(f, e.Key(), data, e.Revision(), f.setBreaker)
	}
}

// applyFleetValue decodes a key's value into the in-memory copy; a value that
// cannot be read counts as the zero state, which the next write replaces.
func applyFleetValue[S any](f *fleet, key string, data []byte, rev uint64, set func(S, uint64)) {
	var s S
	if len(data) > 0 {
		if err := json.Unmarshal(data, &s); err != nil {
			f.log.Warn().Str("key", key).Err(err).Msg("unreadable fleet state; treating it as empty")
			s = *new(S)
		}
	}
	f.mu.Lock()
	set(s, rev)
	f.mu.Unlock()
}

// fleetCASAttempts bounds the retries of one compare-and-swap write lost to
// other workers.
const fleetCASAttempts = 10

// casFleetKey changes a fleet key with compare-and-swap: change edits a copy of
// the in-memory value and says whether to write it; a lost race reads the
// key again and retries. It reports whether it wrote.
func casFleetKey[S any](ctx context.Context, f *fleet, key string, rec *fleetRecord[S], set func(S, uint64), change func(*S) bool) (bool, error) {
	for range fleetCASAttempts {
		f.mu.Lock()
		next, rev := rec.val, rec.rev
		f.mu.Unlock()
		if !change(&next) {
			return false, nil
		}
		data, err := json.Marshal(next)
		if err != nil {
			return false, err
		}
		newRev, err := f.b.put(ctx, key, data, rev)
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, err := f.kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				// Gone (the bucket made again, the key deleted): the state
				// starts over, and the next write creates the key.
				f.mu.Lock()
				rec.rev = 0
				f.mu.Unlock()
				continue
			}
			if err != nil {
				return false, fmt.Errorf("reading fleet key %s: %w", key, err)
			}
			applyFleetValue(f, key, e.Value(), e.Revision(), set)
			continue
		}
		if err != nil {
			return false, fmt.Errorf("writing fleet key %s: %w", key, err)
		}
		f.mu.Lock()
		set(next, newRev)
		f.mu.Unlock()
		return true, nil
	}
	return false, fmt.Errorf("writing fleet key %s: lost %d races to other workers", key, fleetCASAttempts)
}

// fleetWriteTimeout bounds the writes of report, which has no caller context.
const fleetWriteTimeout = 2 * time.Second

// turn is the permission to make one HTTP attempt, from admit to report.
type turn struct {
	// probe: this attempt is the fleet's probe of an open breaker.
	probe bool
}

// callOutcome is what an attempt told about iDenfy, for report.
type callOutcome int

const (
	outcomeSuccess     callOutcome = iota // a 2xx answer
	outcomeUnavailable                    // 5xx, timeout, connection error, unreadable answer
	outcomeRateLimited                    // 429
	outcomeRejected                       // another answer (4xx): iDenfy serves, the request was refused
	outcomeAbandoned                      // no answer because this side gave up (cancelled): tells nothing
)

// callOutcomeOf classifies the error of an attempt: any 5xx counts as
// unavailable, as do the errors retryable retries.
func callOutcomeOf(err error) callOutcome {
	var te *idenfy.TransportError
	switch {
	case err == nil:
		return outcomeSuccess
	case errors.Is(err, idenfy.ErrRateLimited):
		return outcomeRateLimited
	case errors.As(err, &te) && errors.Is(err, context.Canceled):
		return outcomeAbandoned
	case errors.Is(err, idenfy.ErrServerError) || retryable(err):
		return outcomeUnavailable
	}
	return outcomeRejected
}

// refusalReason says why admit refused a call.
type refusalReason string

const (
	refusedRateLimit   refusalReason = "rate_limit"   // no turn of the rate limit within the caller's deadline
	refusedPaused      refusalReason = "paused"       // the fleet pauses after a 429 past the caller's deadline
	refusedBreakerOpen refusalReason = "breaker_open" // the circuit breaker is open
)

// fleetRefusal is admit's answer when a call may not go: RetryAfter is
// when asking again makes sense (for error.retry_after, rounded up).
type fleetRefusal struct {
	Reason     refusalReason
	RetryAfter time.Duration
}

func (e *fleetRefusal) Error() string {
	switch e.Reason {
	case refusedBreakerOpen:
		return fmt.Sprintf("iDenfy is unavailable (circuit breaker open); next probe in %s", e.RetryAfter.Round(time.Millisecond))
	case refusedPaused:
		return fmt.Sprintf("iDenfy asked every worker to slow down (429); paused for %s", e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("no turn of the rate limit within the budget; next turn in about %s", e.RetryAfter.Round(time.Millisecond))
}

// retryAfterSeconds is RetryAfter for error.retry_after: whole seconds,
// rounded up, at least 1.
func (e *fleetRefusal) retryAfterSeconds() int { return wholeSeconds(e.RetryAfter) }

// errFleetStopped: admit was waiting when the fleet stopped.
var errFleetStopped = errors.New("worker: stopping")

// idle reports whether a call may go now without asking anyone: no rate
// limit, the breaker closed, no pause.
func (f *fleet) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lim == nil && f.breaker.val.State == breakerClosed && f.clock.Now().UnixNano() >= f.pause.val.Until
}

// admit waits until this process may make one HTTP attempt: no pause, the
// breaker closed (or this attempt its probe), a turn of the rate limit
// (interactive callers first). A wait that would outlast ctx's deadline is
// refused at once with a *fleetRefusal; the breaker refuses at once.
func (f *fleet) admit(ctx context.Context, interactive bool) (turn, error) {
	if f.idle() {
		return turn{}, nil
	}
	var t turn
	for {
		// An open breaker refuses at once, paused or not.
		if !t.probe {
			if err := f.refuseOpen(); err != nil {
				return turn{}, err
			}
		}
		if err := f.waitPause(ctx); err != nil {
			f.report(t, outcomeAbandoned, 0)
			return turn{}, err
		}
		if !t.probe {
			var err error
			if t, err = f.breakerTurn(ctx); err != nil {
				return turn{}, err
			}
		}
		if f.lim != nil {
			if err := f.lim.take(ctx, interactive); err != nil {
				f.report(t, outcomeAbandoned, 0)
				return turn{}, err
			}
		}
		// A pause or an opening that began while the token was awaited
		// wins; the token is forfeited.
		f.mu.Lock()
		paused := f.clock.Now().UnixNano() < f.pause.val.Until
		opened := !t.probe && f.breaker.val.State != breakerClosed
		f.mu.Unlock()
		if !paused && !opened {
			return t, nil
		}
	}
}

// report tells the fleet what the attempt of t learned. retryAfter is, for
// a 429, its Retry-After or else the backoff's next delay.
func (f *fleet) report(t turn, o callOutcome, retryAfter time.Duration) {
	if o == outcomeRateLimited {
		f.pauseFor(retryAfter)
	}
	if f.br.Off {
		return
	}
	if t.probe {
		f.probed(o)
		return
	}
	switch o {
	case outcomeAbandoned:
	case outcomeUnavailable:
		f.failed()
	default:
		f.answered()
	}
}

// open reports whether the breaker is open (a probe under way included):
// the jobs intake leaves jobs in the stream meanwhile.
func (f *fleet) open() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.breaker.val.State != breakerClosed
}

// breakerClosed returns a channel that is closed once the breaker is
// closed: at once when it is.
func (f *fleet) breakerClosed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closedCh
}

// breakerTurn lets a call go while the breaker is closed, gives the probe
// turn to the first caller of the fleet once a probe is due, and refuses
// the others at once.
func (f *fleet) breakerTurn(ctx context.Context) (turn, error) {
	if f.br.Off {
		return turn{}, nil
	}
	f.mu.Lock()
	s := f.breaker.val
	f.mu.Unlock()
	if s.State == breakerClosed {
		return turn{}, nil
	}
	now := f.clock.Now()
	if now.UnixNano() >= s.Probe {
		// One caller of this process competes for the turn; the others
		// are refused without a round trip each.
		f.mu.Lock()
		busy := f.takingProbe
		f.takingProbe = true
		f.mu.Unlock()
		if busy {
			f.refused.Inc()
			return turn{}, &fleetRefusal{Reason: refusedBreakerOpen, RetryAfter: f.probe}
		}
		won, err := casFleetKey(ctx, f, keyBreaker, &f.breaker, f.setBreaker, func(s *breakerState) bool {
			return s.takeProbe(now, f.probe, f.id)
		})
		f.mu.Lock()
		f.takingProbe = false
		f.mu.Unlock()
		if err != nil {
			f.log.Warn().Err(err).Msg("taking the circuit breaker's probe turn")
		}
		if won {
			f.log.Info().Msg("circuit breaker: this worker probes iDenfy")
			return turn{probe: true}, nil
		}
		f.mu.Lock()
		s = f.breaker.val
		f.mu.Unlock()
		if s.State == breakerClosed {
			return turn{}, nil
		}
	}
	return turn{}, f.refusal(s, now)
}

// refuseOpen refuses a call while the breaker is open and no probe is due.
func (f *fleet) refuseOpen() error {
	if f.br.Off {
		return nil
	}
	f.mu.Lock()
	s := f.breaker.val
	f.mu.Unlock()
	now := f.clock.Now()
	if s.State == breakerClosed || now.UnixNano() >= s.Probe {
		return nil
	}
	return f.refusal(s, now)
}

func (f *fleet) refusal(s breakerState, now time.Time) error {
	f.refused.Inc()
	return &fleetRefusal{Reason: refusedBreakerOpen, RetryAfter: max(0, time.Duration(s.Probe-now.UnixNano()))}
}

func (f *fleet) failed() {
	now := f.clock.Now()
	var opened bool
	f.writeBreaker(func(s *breakerState) bool {
		changed := s.failed(now, f.br, f.probe)
		opened = s.State == breakerOpen
		return changed
	}, func() {
		if opened {
			f.log.Warn().Int("failures", f.br.N).Str("window", f.br.Window.String()).Str("probe_every", f.probe.String()).
				Msg("circuit breaker open: iDenfy is unavailable; every worker stops calling it but for one probe per interval")
		}
	})
}

// answered resets a run of failures; it writes only when the in-memory
// copy shows one, so that a success costs nothing while all is well.
func (f *fleet) answered() {
	f.mu.Lock()
	s := f.breaker.val
	f.mu.Unlock()
	if s.State != breakerClosed || s.Fails == 0 {
		return
	}
	f.writeBreaker((*breakerState).answered, nil)
}

func (f *fleet) probed(o callOutcome) {
	now := f.clock.Now()
	var closed bool
	f.writeBreaker(func(s *breakerState) bool {
		changed := s.probed(now, o, f.id)
		closed = s.State == breakerClosed
		return changed
	}, func() {
		if closed {
			f.log.Info().Msg("circuit breaker closed: iDenfy answered the probe; every worker calls it again")
		} else if o == outcomeUnavailable {
			f.log.Info().Str("next_probe_in", f.probe.String()).Msg("circuit breaker stays open: the probe failed")
		}
	})
}

// writeBreaker updates the breaker key for report, logging a failure, and
// calls wrote after a write.
func (f *fleet) writeBreaker(change func(*breakerState) bool, wrote func()) {
	ctx, cancel := context.WithTimeout(f.ctx, fleetWriteTimeout)
	defer cancel()
	ok, err := casFleetKey(ctx, f, keyBreaker, &f.breaker, f.setBreaker, change)
	if err != nil {
		f.log.Warn().Err(err).Msg("updating the fleet's circuit breaker")
	}
	if ok && wrote != nil {
		wrote()
	}
}

// setBreaker installs a newer breaker state; f.mu is held.
func (f *fleet) setBreaker(s breakerState, rev uint64) {
	if rev <= f.breaker.rev {
		return
	}
	wasOpen := f.breaker.val.State != breakerClosed
	f.breaker = fleetRecord[breakerState]{val: s, rev: rev}
	switch isOpen := s.State != breakerClosed; {
	case isOpen && !wasOpen:
		f.closedCh = make(chan struct{})
	case !isOpen && wasOpen:
		close(f.closedCh)
	}
}

// collectors are the fleet's metrics, as this process sees the fleet.
func (f *fleet) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "idenfy_worker_breaker_state",
			Help: "The fleet's circuit breaker toward iDenfy: 0 closed, 1 open, 2 half-open (a probe under way).",
		}, func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.breaker.val.gauge()
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "idenfy_worker_paused_seconds_total",
			Help: "Time this worker spent paused because iDenfy answered 429 to a worker of the fleet.",
		}, func() float64 { return f.pausedTotal().Seconds() }),
		f.refused, f.rateWaits, f.rateWaitSeconds,
	}
}
