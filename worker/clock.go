package worker

import (
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Clock is the worker's source of time: job ages, leases, send-limit windows
// and backoff waits all read it. Tests pass a fake that moves when waited on,
// so retries never sleep on the wall clock.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// clockTimer adapts a Clock to backoff.Timer.
type clockTimer struct {
	clock Clock
	c     <-chan time.Time
}

var _ backoff.Timer = (*clockTimer)(nil)

func (t *clockTimer) Start(d time.Duration) { t.c = t.clock.After(d) }
func (t *clockTimer) C() <-chan time.Time   { return t.c }
func (t *clockTimer) Stop()                 {}
