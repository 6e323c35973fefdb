// Package clocktest is a clock for tests of code that reads its time from
// an injected clock (the worker's Clock): it moves only when told to, or
// when waited on. After(d) moves it by d and fires at once, so that a
// backoff wait takes no wall time while its budget is still spent.
//
//	clock := clocktest.New(time.Now())
//	clock.Advance(6 * time.Minute)
package clocktest

import (
	"sync"
	"time"
)

// Clock is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock that reads start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After moves the clock by d and returns a channel that holds the new time.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- c.Advance(d)
	return ch
}

// Advance moves the clock by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}
