package worker

import (
	"context"
	"slices"
	"sync"
)

// places are the WORKER_CONCURRENCY places of calls to iDenfy in flight,
// shared by both intakes. When all are taken, a place that frees goes to a
// waiting request of the request/reply intake before any waiting job, so
// that a request never waits behind a backlog of jobs (README "One fleet
// toward iDenfy").
type places struct {
	mu      sync.Mutex
	free    int
	waiting waiters
}

// waiters are the callers waiting for something (a call place, a token of
// the rate limit): requests of the request/reply intake first, then jobs,
// each in arrival order. Their owner's lock guards them.
type waiters struct {
	interactive, jobs []chan struct{}
}

// add queues a caller and returns the channel it is woken on.
func (q *waiters) add(interactive bool) chan struct{} {
	ch := make(chan struct{}, 1)
	if interactive {
		q.interactive = append(q.interactive, ch)
	} else {
		q.jobs = append(q.jobs, ch)
	}
	return ch
}

// next removes and returns the first waiter, a request before any job;
// nil when none waits.
func (q *waiters) next() chan struct{} {
	var ch chan struct{}
	switch {
	case len(q.interactive) > 0:
		ch, q.interactive = q.interactive[0], q.interactive[1:]
	case len(q.jobs) > 0:
		ch, q.jobs = q.jobs[0], q.jobs[1:]
	}
	return ch
}

// remove takes ch out of the queue, and reports whether it was still in it
// (else it was woken already).
func (q *waiters) remove(ch chan struct{}) bool {
	n := q.len()
	q.interactive = slices.DeleteFunc(q.interactive, func(c chan struct{}) bool { return c == ch })
	q.jobs = slices.DeleteFunc(q.jobs, func(c chan struct{}) bool { return c == ch })
	return q.len() < n
}

// ahead is how many waiters a new caller would wait behind.
func (q *waiters) ahead(interactive bool) int {
	if interactive {
		return len(q.interactive)
	}
	return q.len()
}

func (q *waiters) len() int { return len(q.interactive) + len(q.jobs) }

func newPlaces(n int) *places { return &places{free: n} }

// acquire takes a place, waiting until one is free or ctx ends; onWait,
// when not nil, is called once it must wait.
func (p *places) acquire(ctx context.Context, interactive bool, onWait func()) error {
	p.mu.Lock()
	if p.free > 0 && p.waiting.ahead(interactive) == 0 {
		p.free--
		p.mu.Unlock()
		return nil
	}
	ch := p.waiting.add(interactive)
	p.mu.Unlock()
	if onWait != nil {
		onWait()
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	granted := !p.waiting.remove(ch)
	p.mu.Unlock()
	if granted {
		// The place came as ctx ended: pass it on.
		p.release()
	}
	return ctx.Err()
}

// release frees a place, handing it to the first waiting request, else to
// the first waiting job.
func (p *places) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ch := p.waiting.next(); ch != nil {
		ch <- struct{}{}
		return
	}
	p.free++
}

// freePlaces is how many places are free.
func (p *places) freePlaces() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.free
}
