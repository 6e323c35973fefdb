package worker

import (
	"context"
	"sync"
	"time"
)

// admission bounds what a worker takes on, so that a flood of requests
// queues in NATS rather than in memory: requests admitted into the process
// (slots), and HTTP calls to iDenfy in flight (call places, the
// WORKER_CONCURRENCY of README's "Configuration", shared by both intakes,
// requests first). It also runs admitted requests on reused goroutines and
// tracks them for Shutdown.
type admission struct {
	// calls bounds the HTTP attempts in flight. Each intake has slots of
	// its own, twice as many, so that calls are never idle while requests
	// do their KV round trips, and so that jobs waiting for the fleet (a
	// rate limit, an open breaker) never keep a request out.
	calls       *places
	concurrency int
	slots       [2]chan struct{} // by intake: request, job
	// idle hands a request to a goroutine waiting for one (see spawn).
	idle    chan func()
	tasks   tracker
	metrics *metrics
}

func newAdmission(concurrency int, m *metrics) *admission {
	return &admission{
		calls:       newPlaces(concurrency),
		concurrency: concurrency,
		slots:       [2]chan struct{}{make(chan struct{}, 2*concurrency), make(chan struct{}, 2*concurrency)},
		idle:        make(chan func()),
		metrics:     m,
	}
}

// slot is a request's place in the worker.
type slot struct {
	ad    *admission
	slots chan struct{}
}

// enter admits a request of the intake (intakeRequest or intakeJob), or
// returns nil once stop ends.
func (ad *admission) enter(stop <-chan struct{}, intake string) *slot {
	slots := ad.slots[0]
	if intake == intakeJob {
		slots = ad.slots[1]
	}
	select {
	case slots <- struct{}{}:
	default:
		ad.metrics.poolFull()
		select {
		case slots <- struct{}{}:
		case <-stop:
			return nil
		}
	}
	if !ad.tasks.add() {
		<-slots
		return nil
	}
	return &slot{ad: ad, slots: slots}
}

// leave ends the request's admission.
func (s *slot) leave() {
	<-s.slots
	s.ad.tasks.done()
}

// acquireCall takes one of the call places for one HTTP attempt; a waiting
// request gets the next free one before any waiting job. The KV round trips
// before and after a call, and the waits between attempts, hold none.
func (ad *admission) acquireCall(ctx context.Context, interactive bool) error {
	return ad.calls.acquire(ctx, interactive, ad.metrics.poolFull)
}

func (ad *admission) releaseCall() { ad.calls.release() }

// callsInFlight is how many call places are taken.
func (ad *admission) callsInFlight() int { return ad.concurrency - ad.calls.freePlaces() }

// spawnIdle is how long a goroutine that finished a request waits for the
// next before it exits.
const spawnIdle = 2 * time.Second

// spawn runs f, which holds a slot, on a goroutine of its own. Goroutines
// are reused: one that finishes waits a moment for the next request, so
// that a busy worker does not grow a fresh stack (HTTP client, JSON, NATS:
// a deep one) for every request. There are never more of them than slots.
func (ad *admission) spawn(f func()) {
	select {
	case ad.idle <- f:
	default:
		go ad.runLoop(f)
	}
}

func (ad *admission) runLoop(f func()) {
	timer := time.NewTimer(spawnIdle)
	defer timer.Stop()
	for {
		f()
		timer.Reset(spawnIdle)
		select {
		case f = <-ad.idle:
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
