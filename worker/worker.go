// Package worker connects NATS to iDenfy: it serves the request/reply intake
// as a NATS micro service and the durable-jobs intake as a JetStream
// consumer, runs every request through one handler core (guard, idempotency,
// the iDenfy call under exponential backoff) and publishes every outcome.
//
// A Worker is built from a Config with New, started with Start and stopped
// with Shutdown. It does not own the NATS connection or the HTTP client: the
// caller (cmd/idenfy-worker) builds both and closes them after Shutdown.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// Version is the worker's version, as the micro service announces it.
const Version = "0.1.0"

// Worker serves both intakes. Its methods are safe for concurrent use.
type Worker struct {
	cfg    Config
	log    zerolog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	client *idenfy.Client
	subj   messages.Subjects
	clock  Clock
	id     string
	lease  time.Duration
	// jobRetryBase is the first pause of a job handed back to retry later.
	jobRetryBase time.Duration
	limiter      *rate.Limiter
	store        *store
	metrics      *metrics

	// calls bounds the HTTP attempts in flight (WORKER_CONCURRENCY);
	// admitted bounds the requests in the worker, twice as many, so that
	// calls are never idle while requests do their KV round trips.
	calls    chan struct{}
	admitted chan struct{}
	// idle hands a request to a goroutine waiting for one (see spawn).
	idle  chan func()
	tasks tracker

	// soft ends when shutdown starts: stop taking work, stop waiting
	// between attempts. hard ends when the shutdown timeout passes: cut
	// attempts under way.
	soft, hard         context.Context
	stopSoft, stopHard context.CancelFunc

	leaseMu sync.Mutex
	leases  map[*claim]*held // claims under renewal (see keepClaim)

	mu       sync.Mutex
	mine     map[string]chan struct{} // KV keys a task of this process holds (see holdKey)
	started  bool
	svc      micro.Service
	jobs     *jobIntake
	stranded *nats.Subscription // max-deliveries advisories (see watchStranded)
	stats    [2]endpointStats
	shutOnce sync.Once
	ready    atomic.Bool
}

// New checks cfg and returns a Worker that is not started yet.
func New(cfg Config, opts ...Option) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:          cfg,
		log:          cfg.Logger,
		nc:           cfg.Conn,
		client:       cfg.Client,
		subj:         messages.NewSubjects(cfg.Prefix),
		clock:        systemClock{},
		id:           nuid.Next(),
		lease:        30 * time.Second,
		jobRetryBase: 5 * time.Second,
		calls:        make(chan struct{}, cfg.Concurrency),
		admitted:     make(chan struct{}, 2*cfg.Concurrency),
		idle:         make(chan func()),
		mine:         make(map[string]chan struct{}),
		leases:       make(map[*claim]*held),
	}
	for _, opt := range opts {
		if err := opt(w); err != nil {
			return nil, err
		}
	}
	if cfg.RateLimit.N > 0 {
		w.limiter = rate.NewLimiter(rate.Every(cfg.RateLimit.Per/time.Duration(cfg.RateLimit.N)), 1)
	}
	var err error
	w.js, err = jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.metrics = newMetrics(w, cfg.Registerer)
	w.soft, w.stopSoft = context.WithCancel(context.Background())
	w.hard, w.stopHard = context.WithCancel(context.Background())
	return w, nil
}

// ID identifies this worker process in claims and in the micro service.
func (w *Worker) ID() string { return w.id }

// ServiceID is the instance id of the worker's micro service, as `nats
// micro info` shows it; empty before Start or with requests disabled.
func (w *Worker) ServiceID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.svc == nil {
		return ""
	}
	return w.svc.Info().ID
}

// Start creates what is missing of the stream, consumer and buckets, then
// starts both intakes. ctx bounds the set-up only.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.started:
		return ErrStarted
	case w.stopping():
		return ErrShutDown
	}
	if err := w.ensureBuckets(ctx); err != nil {
		return err
	}
	var cons jetstream.Consumer
	var created time.Time
	if !w.cfg.DisableJobs {
		var err error
		if cons, created, err = w.ensureJobs(ctx); err != nil {
			return err
		}
	}
	if !w.cfg.DisableRequests {
		if err := w.startService(); err != nil {
			return fmt.Errorf("worker: starting the micro service: %w", err)
		}
		// Once Start returns, the server knows the subscriptions: a request
		// sent now finds a responder.
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := w.nc.FlushWithContext(fctx)
		cancel()
		if err != nil {
			_ = w.svc.Stop()
			w.svc = nil
			return fmt.Errorf("worker: registering the micro service: %w", err)
		}
	}
	if cons != nil {
		sub, err := w.watchStranded()
		if err != nil {
			if w.svc != nil {
				_ = w.svc.Stop()
				w.svc = nil
			}
			return fmt.Errorf("worker: watching for jobs that used up their deliveries: %w", err)
		}
		w.stranded = sub
		w.jobs = newJobIntake(w, cons, created)
		go w.jobs.run()
	}
	go w.keepLeases()
	w.started = true
	w.ready.Store(true)
	ev := w.log.Info().Str("worker_id", w.id)
	if w.svc != nil {
		ev = ev.Str("service_id", w.svc.Info().ID)
	}
	ev.Str("prefix", w.cfg.Prefix).
		Bool("requests", !w.cfg.DisableRequests).Bool("jobs", !w.cfg.DisableJobs).
		Int("concurrency", w.cfg.Concurrency).Msg("worker started")
	return nil
}

// Shutdown stops taking work, lets requests in flight finish within the
// shutdown timeout (or ctx, whichever ends first), answers shutting_down to
// requests and hands jobs back for those that cannot, and returns when
// nothing is in flight. The caller drains the NATS connection afterwards.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.shutOnce.Do(func() {
		w.ready.Store(false)
		w.log.Info().Msg("worker stopping: no new work")
		w.stopSoft()
		w.mu.Lock()
		svc, jobs, stranded := w.svc, w.jobs, w.stranded
		w.mu.Unlock()
		if stranded != nil {
			_ = stranded.Unsubscribe()
		}
		if svc != nil {
			if err := svc.Stop(); err != nil {
				w.log.Warn().Err(err).Msg("stopping the micro service")
			}
			// Once the server has the unsubscribes, requests go to other
			// workers instead of being answered shutting_down here.
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_ = w.nc.FlushWithContext(fctx)
			cancel()
		}
		if jobs != nil {
			jobs.stop()
		}
	})

	done := w.tasks.close()
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
		w.stopHard()
		w.log.Info().Msg("worker stopped")
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	w.log.Warn().Msg("shutdown timeout: cutting the calls still in flight")
	w.stopHard()
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("worker: requests still in flight after the shutdown timeout")
	}
}

// Ready reports why the worker does not serve, or nil when it does:
// started and not stopping, connected to NATS, the jobs consumer consuming,
// the KV bucket reachable.
func (w *Worker) Ready(ctx context.Context) error {
	if !w.ready.Load() {
		return errors.New("not serving (starting or stopping)")
	}
	if !w.nc.IsConnected() {
		return fmt.Errorf("NATS connection is %s", w.nc.Status())
	}
	w.mu.Lock()
	jobs, st := w.jobs, w.store
	w.mu.Unlock()
	if jobs != nil && !jobs.consuming.Load() {
		return errors.New("the jobs consumer is not consuming")
	}
	if _, err := st.kv.Status(ctx); err != nil {
		return fmt.Errorf("KV bucket %s unreachable: %w", w.cfg.Bucket, err)
	}
	return nil
}

func (w *Worker) stopping() bool { return w.soft.Err() != nil }

// slot is a request's place in the worker: admitted requests are bounded,
// so that a flood of them queues in NATS rather than in memory.
type slot struct{ w *Worker }

// acquireSlot admits a request, or returns nil when shutdown starts.
func (w *Worker) acquireSlot() *slot {
	select {
	case w.admitted <- struct{}{}:
	default:
		w.metrics.poolFull()
		select {
		case w.admitted <- struct{}{}:
		case <-w.soft.Done():
			return nil
		}
	}
	if !w.tasks.add() {
		<-w.admitted
		return nil
	}
	return &slot{w: w}
}

// release ends the request's admission.
func (s *slot) release() {
	<-s.w.admitted
	s.w.tasks.done()
}

// acquireCall takes one of the WORKER_CONCURRENCY places of calls to iDenfy
// in flight, shared by both intakes, for one HTTP attempt. The KV round
// trips before and after a call, and the waits between attempts, hold none.
func (w *Worker) acquireCall(ctx context.Context) error {
	select {
	case w.calls <- struct{}{}:
		return nil
	default:
	}
	w.metrics.poolFull()
	select {
	case w.calls <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Worker) releaseCall() { <-w.calls }

// spawnIdle is how long a goroutine that finished a request waits for the
// next before it exits.
const spawnIdle = 2 * time.Second

// spawn runs f, which holds a slot, on a goroutine of its own. Goroutines
// are reused: one that finishes waits a moment for the next request, so
// that a busy worker does not grow a fresh stack (HTTP client, JSON, NATS:
// a deep one) for every request. There are never more of them than places
// in the two pools.
func (w *Worker) spawn(f func()) {
	select {
	case w.idle <- f:
	default:
		go w.runLoop(f)
	}
}

func (w *Worker) runLoop(f func()) {
	timer := time.NewTimer(spawnIdle)
	defer timer.Stop()
	for {
		f()
		timer.Reset(spawnIdle)
		select {
		case f = <-w.idle:
		case <-timer.C:
			return
		}
	}
}

// tracker counts requests in flight and tells when the last one ends after
// it was closed. Unlike a WaitGroup, adding after closing is refused rather
// than racing with the wait.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.closed && t.n == 0 {
		close(t.idle)
	}
}

// close refuses further adds and returns a channel closed once none is in
// flight.
func (t *tracker) close() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		t.idle = make(chan struct{})
		if t.n == 0 {
			close(t.idle)
		}
	}
	return t.idle
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// waitRate waits for the process's upstream rate limit.
func (w *Worker) waitRate(ctx context.Context) error {
	if w.limiter == nil {
		return nil
	}
	return w.limiter.Wait(ctx)
}

// holdKey makes this process's task the only one working on a KV key
// (an idempotency key, a request_id's verify turn): two tasks of one process
// must not race each other for the store's claim, since the store cannot
// tell them apart. It returns release when the key was free, or a channel
// that closes when its holder releases it.
func (w *Worker) holdKey(key string) (release func(), busy <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.mine[key]; ok {
		return nil, ch
	}
	ch := make(chan struct{})
	w.mine[key] = ch
	return func() {
		w.mu.Lock()
		delete(w.mine, key)
		w.mu.Unlock()
		close(ch)
	}, nil
}

// isMine reports whether a task of this process holds key.
func (w *Worker) isMine(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.mine[key]
	return ok
}
