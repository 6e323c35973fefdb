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
	mu   sync.Mutex
	free int
	// interactive and jobs wait for a place, in order.
	interactive, jobs []chan struct{}
}

func newPlaces(n int) *places { return &places{free: n} }

// acquire takes a place, waiting until one is free or ctx ends.
func (p *places) acquire(ctx context.Context, interactive bool) error {
	p.mu.Lock()
	if p.free > 0 && len(p.interactive) == 0 && (interactive || len(p.jobs) == 0) {
		p.free--
		p.mu.Unlock()
		return nil
	}
	ch := make(chan struct{}, 1)
	if interactive {
		p.interactive = append(p.interactive, ch)
	} else {
		p.jobs = append(p.jobs, ch)
	}
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	queued := len(p.interactive) + len(p.jobs)
	p.interactive = slices.DeleteFunc(p.interactive, func(c chan struct{}) bool { return c == ch })
	p.jobs = slices.DeleteFunc(p.jobs, func(c chan struct{}) bool { return c == ch })
	granted := queued == len(p.interactive)+len(p.jobs)
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
	var ch chan struct{}
	switch {
	case len(p.interactive) > 0:
		ch, p.interactive = p.interactive[0], p.interactive[1:]
	case len(p.jobs) > 0:
		ch, p.jobs = p.jobs[0], p.jobs[1:]
	default:
		p.free++
		return
	}
	ch <- struct{}{}
}

// waiting is how many callers wait for a place.
func (p *places) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.interactive) + len(p.jobs)
}

// freePlaces is how many places are free.
func (p *places) freePlaces() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.free
}
