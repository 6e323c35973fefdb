package worker

import (
	"context"
	"math"
	"time"
)

// The fleet's rate limit is a token bucket in one key of the fleet bucket,
// refilled at the limit's rate up to capacity and taken from by
// compare-and-swap. A worker does not take one token per call: with a
// backlog it leases a batch (a tenth of a second's share), which its
// waiting calls spend at once, and forfeits what it has not spent after
// tokenLease, so that a worker that dies holds nothing for longer. Tokens
// are never handed back.
//
// The bound: the calls of any window W were granted within W plus
// tokenLease, so there are at most capacity + rate×(W + tokenLease) of
// them, that is the limit plus three quarters of a second's share; the
// quarter left over absorbs clocks of the hosts that differ by up to 250ms.
// A backlog keeps every refilled token taken before the bucket fills up, so
// it drains at the full rate but for the tokens of calls that gave up
// between lease and grant.
const (
	tokenCapacity = 500 * time.Millisecond // of the rate, at least 1 token
	tokenBatch    = 100 * time.Millisecond // of the rate, at least 1 token
	tokenLease    = 250 * time.Millisecond
)

// rateState is the value of the fleet's rate key: Tokens at At (Unix ns).
// At zero means the key was never written: the bucket is full.
type rateState struct {
	Tokens float64 `json:"tokens"`
	At     int64   `json:"at"`
}

// fleetLimiter hands out this process's turns of the fleet's rate limit. Its
// fields below the line are guarded by the fleet's mutex.
type fleetLimiter struct {
	f        *fleet
	rate     float64 // tokens per second
	capacity float64
	batch    int
	wake     chan struct{}

	tokens  int       // leased and not spent
	expires time.Time // when the leased tokens are forfeited
	// interactive and jobs wait for a token, in order; interactive first.
	waiting waiters
}

func newFleetLimiter(f *fleet, r RateLimit) *fleetLimiter {
	rate := float64(r.N) / r.Per.Seconds()
	batch := max(1, int(rate*tokenBatch.Seconds()))
	return &fleetLimiter{
		f:        f,
		rate:     rate,
		batch:    batch,
		capacity: max(1, float64(batch), rate*tokenCapacity.Seconds()),
		wake:     make(chan struct{}, 1),
	}
}

// level is the bucket's tokens at now.
func (l *fleetLimiter) level(s rateState, now time.Time) float64 {
	if s.At == 0 {
		return l.capacity
	}
	elapsed := max(0, float64(now.UnixNano()-s.At)/1e9)
	return min(l.capacity, max(0, s.Tokens)+l.rate*elapsed)
}

// take waits for a token of this process, refusing at once when the wait
// would likely outlast ctx's deadline.
func (l *fleetLimiter) take(ctx context.Context, interactive bool) error {
	f := l.f
	f.mu.Lock()
	now := f.clock.Now()
	ahead := l.waiting.ahead(interactive)
	if ahead == 0 && l.tokens > 0 && now.Before(l.expires) {
		l.tokens--
		f.mu.Unlock()
		return nil
	}
	wait := l.estimate(now, ahead)
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
		f.mu.Unlock()
		return &fleetRefusal{Reason: refusedRateLimit, RetryAfter: wait}
	}
	ch := l.waiting.add(interactive)
	f.mu.Unlock()
	l.kick()

	f.rateWaits.Inc()
	start := time.Now() // a measurement, not policy: always the wall clock
	defer func() { f.rateWaitSeconds.Add(time.Since(start).Seconds()) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	case <-f.ctx.Done():
	}
	f.mu.Lock()
	l.waiting.remove(ch)
	wait = l.estimate(f.clock.Now(), ahead)
	f.mu.Unlock()
	if f.ctx.Err() != nil {
		return errFleetStopped
	}
	// A token granted as ctx ended is forfeited with the call.
	return refusalOf(ctx, refusedRateLimit, wait)
}

// estimate is how long a call with ahead others before it may wait for
// its token, from what this process knows; f.mu is held.
func (l *fleetLimiter) estimate(now time.Time, ahead int) time.Duration {
	have := l.level(l.f.rate.val, now)
	if now.Before(l.expires) {
		have += float64(l.tokens)
	}
	need := float64(ahead+1) - math.Floor(have)
	if need <= 0 {
		return 0
	}
	return time.Duration(need / l.rate * float64(time.Second))
}

func (l *fleetLimiter) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run leases tokens while calls wait for them, and grants them.
func (l *fleetLimiter) run() {
	defer l.f.done.Done()
	for {
		select {
		case <-l.wake:
		case <-l.f.ctx.Done():
			return
		}
		for l.fill() {
			l.grant()
		}
	}
}

// fill returns true once this process holds tokens for calls that wait,
// false when none waits any more or the fleet stops. While the fleet is
// paused it leases nothing: the tokens would go unspent.
func (l *fleetLimiter) fill() bool {
	f := l.f
	retry := 50 * time.Millisecond
	for {
		f.mu.Lock()
		now := f.clock.Now()
		demand := l.waiting.len()
		have := l.tokens > 0 && now.Before(l.expires)
		paused := time.Duration(f.pause.val.Until - now.UnixNano())
		f.mu.Unlock()
		switch {
		case demand == 0:
			return false
		case have:
			return true
		}
		wait := paused
		if wait <= 0 {
			got, next, err := l.lease(now, demand)
			switch {
			case err != nil:
				f.log.Warn().Err(err).Msg("leasing turns of the fleet's rate limit")
				wait, retry = retry, min(2*retry, time.Second)
			case got:
				return true
			default:
				wait = next
			}
		}
		select {
		case <-f.clock.After(wait):
		case <-l.wake:
		case <-f.ctx.Done():
			return false
		}
	}
}

// lease takes up to a batch of tokens (no more than demand) from the
// fleet's bucket; without enough of them it says how long until there are.
func (l *fleetLimiter) lease(now time.Time, demand int) (bool, time.Duration, error) {
	var k int
	var wait time.Duration
	wrote, err := casFleetKey(l.f.ctx, l.f, keyRate, &l.f.rate, l.f.setRate, func(s *rateState) bool {
		tokens := l.level(*s, now)
		want := min(l.batch, demand)
		if tokens < float64(want) {
			k, wait = 0, time.Duration((float64(want)-tokens)/l.rate*float64(time.Second))+time.Millisecond
			return false
		}
		k = want
		s.Tokens, s.At = tokens-float64(k), max(s.At, now.UnixNano())
		return true
	})
	if !wrote || err != nil {
		return false, wait, err
	}
	l.f.mu.Lock()
	l.tokens, l.expires = k, now.Add(tokenLease)
	l.f.mu.Unlock()
	return true, 0, nil
}

// grant hands the tokens held to the calls waiting, interactive first.
func (l *fleetLimiter) grant() {
	f := l.f
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock.Now()
	for l.tokens > 0 && now.Before(l.expires) {
		ch := l.waiting.next()
		if ch == nil {
			return
		}
		l.tokens--
		ch <- struct{}{}
	}
}

// setRate installs a newer state of the token bucket; f.mu is held.
func (f *fleet) setRate(s rateState, rev uint64) {
	if rev > f.rate.rev {
		f.rate = fleetRecord[rateState]{val: s, rev: rev}
	}
}
