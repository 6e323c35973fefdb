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

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// Version is the worker's version, as the micro service announces it.
const Version = "0.1.0"

// Worker serves both intakes. It wires the parts that own each concern
// (see doc.go) and owns their lifecycle. Its methods are safe for
// concurrent use.
type Worker struct {
	cfg       Config
	log       zerolog.Logger
	nc        *nats.Conn
	js        jetstream.JetStream
	events    jetstream.JetStream // publishes the events of answered requests (see publishAnswered)
	jobEvents jetstream.JetStream // sends the events of jobs, whose acks the intake awaits (see sendEvent)
	client    *idenfy.Client
	subj      messages.Subjects
	routes    routes
	clock     Clock
	id        string
	lease     time.Duration
	// jobRetryBase is the first pause of a job handed back to retry later.
	jobRetryBase time.Duration
	hash         *hasher
	metrics      *metrics
	admission    *admission
	claims       *claims // set by Start
	guard        *guard
	fleet        *fleet
	// breakerWaits counts the jobs waiting in this process for the fleet's
	// breaker to close (see admitTurn).
	breakerWaits atomic.Int64

	// soft ends when shutdown starts: stop taking work, stop waiting
	// between attempts. hard ends when the shutdown timeout passes: cut
	// attempts under way.
	soft, hard         context.Context
	stopSoft, stopHard context.CancelFunc

	mu       sync.Mutex
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
		hash:         newHasher(cfg.HashKey),
	}
	for _, opt := range opts {
		if err := opt(w); err != nil {
			return nil, err
		}
	}
	var err error
	w.js, err = jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if w.events, err = w.newEventPublisher(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if w.jobEvents, err = w.newJobEventPublisher(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.routes = newRoutes(w.subj)
	w.metrics = newMetrics(w, cfg.Registerer)
	w.admission = newAdmission(cfg.Concurrency, w.metrics)
	w.guard = &guard{countries: cfg.AllowedCountries, blocked: cfg.BlockedNumberTypes, limits: cfg.SendLimits,
		hash: w.hash, clock: w.clock, metrics: w.metrics,
		ranges: newRangeGuard(nil, cfg.PumpingGuard, w.hash.sum, w.clock, cfg.Logger)}
	w.fleet = newFleet(nil, w.nc, w.id, cfg.RateLimit, cfg.Breaker, cfg.BreakerProbe, w.clock, cfg.Logger)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(w.guard.ranges.collectors()...)
		cfg.Registerer.MustRegister(w.fleet.collectors()...)
	}
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
func (w *Worker) Start(ctx context.Context) (err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.started:
		return ErrStarted
	case w.stopping():
		return ErrShutDown
	case !w.nc.IsConnected():
		return fmt.Errorf("worker: %w (the connection is %s)", ErrNotConnected, w.nc.Status())
	}
	// What a failed Start set going is stopped again, so that Start can
	// be tried again once the cause is gone.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := w.ensureBuckets(ctx); err != nil {
		return noJetStream(err)
	}
	if err := w.ensureResults(ctx); err != nil {
		return noJetStream(err)
	}
	if err := w.guard.ranges.start(ctx); err != nil {
		return fmt.Errorf("worker: pumping guard: %w", err)
	}
	undo = append(undo, w.guard.ranges.stop)
	if err := w.fleet.start(ctx); err != nil {
		return err
	}
	undo = append(undo, w.fleet.stop)
	var cons jetstream.Consumer
	var created time.Time
	if !w.cfg.DisableJobs {
		var err error
		if cons, created, err = w.ensureJobs(ctx); err != nil {
			return noJetStream(err)
		}
	}
	if !w.cfg.DisableRequests {
		if err := w.startService(); err != nil {
			return fmt.Errorf("worker: starting the micro service: %w", err)
		}
		undo = append(undo, func() {
			_ = w.svc.Stop()
			w.svc = nil
		})
		// Once Start returns, the server knows the subscriptions: a request
		// sent now finds a responder.
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := w.nc.FlushWithContext(fctx)
		cancel()
		if err != nil {
			return fmt.Errorf("worker: registering the micro service: %w", err)
		}
	}
	if cons != nil {
		sub, err := w.watchStranded()
		if err != nil {
			return fmt.Errorf("worker: watching for jobs that used up their deliveries: %w", err)
		}
		w.stranded = sub
		w.jobs = newJobIntake(w, cons, created)
		go w.jobs.run()
	}
	if w.stopping() {
		// Shutdown began meanwhile: it waits for this lock, and finds
		// what was started in place to stop.
		go w.claims.keepLeases(w.hard.Done())
		w.started = true
		return ErrShutDown
	}
	go w.claims.keepLeases(w.hard.Done())
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

	done := w.admission.tasks.close()
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	// The watches of the pumping guard and the fleet end with the last
	// request, before the caller drains the connection.
	defer w.fleet.stop()
	defer w.guard.ranges.stop()
	select {
	case <-done:
		w.stopHard()
		w.awaitEvents()
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
	jobs, cl := w.jobs, w.claims
	w.mu.Unlock()
	if jobs != nil && !jobs.consuming.Load() {
		return errors.New("the jobs consumer is not consuming")
	}
	if _, err := cl.kv.Status(ctx); err != nil {
		return fmt.Errorf("KV bucket %s unreachable: %w", w.cfg.Bucket, err)
	}
	return nil
}

func (w *Worker) stopping() bool { return w.soft.Err() != nil }

// awaitEvents waits a little for the events of answered requests that the
// results stream has not acked yet, so that a graceful stop loses none.
func (w *Worker) awaitEvents() {
	select {
	case <-w.events.PublishAsyncComplete():
	case <-time.After(5 * time.Second):
		w.log.Warn().Int("pending", w.events.PublishAsyncPending()).Msg("stopping with result events the results stream has not acked")
	}
}

// noJetStream names ErrNoJetStream when err says the server or the account
// has no JetStream, which heals only on the server's side.
func noJetStream(err error) error {
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("%w: %w", ErrNoJetStream, err)
	}
	return err
}
