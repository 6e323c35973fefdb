package worker

import (
	"context"
	"time"
)

// pauseState is the value of the fleet's pause key: no worker starts a call
// to iDenfy before Until (Unix nanoseconds).
type pauseState struct {
	Until int64 `json:"until"`
}

// Bounds of a pause after a 429.
const (
	// minPause is the pause of a 429 whose caller knows no delay.
	minPause = time.Second
	// pauseSlack: a 429 that would extend the pause by less than this
	// writes nothing, so that the answers of many calls in flight cost one
	// write, not one each.
	pauseSlack = 100 * time.Millisecond
)

// pauseFor pauses the fleet for d from now, unless it already is for as
// long: the key only ever moves later.
func (f *fleet) pauseFor(d time.Duration) {
	if d <= 0 {
		d = minPause
	}
	now := f.clock.Now()
	until := now.Add(d).UnixNano()
	var started bool
	ctx, cancel := context.WithTimeout(f.ctx, fleetWriteTimeout)
	defer cancel()
	wrote, err := casFleetKey(ctx, f, keyPause, &f.pause, f.setPause, func(s *pauseState) bool {
		if s.Until >= until-int64(pauseSlack) {
			return false
		}
		started = s.Until <= now.UnixNano()
		s.Until = until
		return true
	})
	switch {
	case err != nil:
		f.log.Warn().Err(err).Msg("pausing the fleet after a 429")
	case wrote && started:
		f.log.Warn().Str("pause", d.String()).Msg("iDenfy answered 429: every worker pauses its calls to iDenfy")
	}
}

// setPause installs a newer pause, and keeps the account of time paused;
// f.mu is held.
func (f *fleet) setPause(s pauseState, rev uint64) {
	if rev <= f.pause.rev {
		return
	}
	old := f.pause.val
	f.pause = fleetRecord[pauseState]{val: s, rev: rev}
	now := f.clock.Now().UnixNano()
	if s.Until <= now || s.Until <= old.Until || old.Until > now {
		return // over already, or an extension of the pause under way
	}
	if f.pauseFrom != 0 {
		f.pausedBefore += time.Duration(max(0, old.Until-f.pauseFrom))
	}
	f.pauseFrom = now
}

// pausedTotal is the time this process has spent paused.
func (f *fleet) pausedTotal() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := f.pausedBefore
	if f.pauseFrom != 0 {
		end := min(f.clock.Now().UnixNano(), f.pause.val.Until)
		total += time.Duration(max(0, end-f.pauseFrom))
	}
	return total
}

// waitPause returns once the fleet is not paused, or refuses at once when
// the pause outlasts ctx's deadline.
func (f *fleet) waitPause(ctx context.Context) error {
	for {
		f.mu.Lock()
		until := f.pause.val.Until
		f.mu.Unlock()
		left := time.Duration(until - f.clock.Now().UnixNano())
		if left <= 0 {
			return nil
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < left {
			return &fleetRefusal{Reason: refusedPaused, RetryAfter: left}
		}
		select {
		case <-f.clock.After(left):
		case <-ctx.Done():
			return refusalOf(ctx, refusedPaused, left)
		case <-f.ctx.Done():
			return errFleetStopped
		}
	}
}

// refusalOf is the error of a wait that ctx ended: a refusal when its
// deadline passed, the cancellation otherwise.
func refusalOf(ctx context.Context, reason refusalReason, retryAfter time.Duration) error {
	if ctx.Err() == context.DeadlineExceeded {
		return &fleetRefusal{Reason: reason, RetryAfter: retryAfter}
	}
	return ctx.Err()
}
