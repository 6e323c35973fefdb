package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// Backoff shape between attempts. Jitter spreads the retries of many workers
// that saw the same outage.
const (
	backoffInitial    = 250 * time.Millisecond
	backoffMultiplier = 2
	backoffJitter     = 0.5
	backoffMaxWait    = 5 * time.Second
)

// attempts is what the retry loop learned about the calls of one request.
type attempts struct {
	// count of HTTP attempts, including those of earlier deliveries.
	count int
	// ambiguous is set once any attempt may have been processed upstream
	// without its answer being read, including a taken-over claim.
	ambiguous bool
	// upstream is the time spent in HTTP attempts.
	upstream time.Duration
	// first and last are the times of the first and the last attempt, for
	// messages such as "3 attempts over 20s".
	first, last time.Time
}

// retryAfterBackOff waits at least as long as the last Retry-After asked,
// and gives up when that is longer than the budget left.
type retryAfterBackOff struct {
	*backoff.ExponentialBackOff
	retryAfter time.Duration
}

func (b *retryAfterBackOff) NextBackOff() time.Duration {
	next := b.ExponentialBackOff.NextBackOff()
	if next == backoff.Stop || b.retryAfter <= next {
		return next
	}
	wait := b.retryAfter
	b.retryAfter = 0
	if b.MaxElapsedTime > 0 && b.GetElapsedTime()+wait > b.MaxElapsedTime {
		return backoff.Stop
	}
	return wait
}

// retry runs call under the backoff policy of README's "How it behaves on
// failures" and
// records what happened in a. The soft context ends waiting between
// attempts (shutdown, caller gone); each attempt gets the hard context, so
// an attempt under way is not cut short by a graceful shutdown.
//
// It returns nil on success, or the error of the last attempt.
func (w *Worker) retry(soft, hard context.Context, t *task, a *attempts, call func(context.Context) error) error {
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(backoffInitial),
		backoff.WithMultiplier(backoffMultiplier),
		backoff.WithRandomizationFactor(backoffJitter),
		backoff.WithMaxInterval(backoffMaxWait),
		backoff.WithMaxElapsedTime(w.cfg.RetryMaxElapsed),
		backoff.WithClockProvider(w.clock),
	)
	policy := &retryAfterBackOff{ExponentialBackOff: exp}

	interactive := t.intake == intakeRequest
	turnBy := w.turnDeadline(t)
	var last, refused error
	// A 429 without Retry-After pauses the fleet for the backoff's next
	// delay, which notify learns.
	var pause429 *turn
	op := func() error {
		if err := soft.Err(); err != nil {
			return backoff.Permanent(err) // stopping: no new attempt
		}
		tn, err := w.takeTurn(soft, turnBy, t)
		if err != nil {
			refused = err
			return backoff.Permanent(err)
		}
		if err := w.admission.acquireCall(soft, interactive); err != nil {
			w.fleet.report(tn, outcomeAbandoned, 0)
			return backoff.Permanent(err)
		}
		if a.first.IsZero() {
			a.first = w.clock.Now()
		}
		start := time.Now() // a measurement, not policy: always the wall clock
		err = call(hard)
		took := time.Since(start)
		w.admission.releaseCall()
		a.count++
		a.last = w.clock.Now()
		a.upstream += took
		w.metrics.upstreamCall(t.op, err, took)
		var retryAfter time.Duration
		var ae *idenfy.APIError
		if errors.As(err, &ae) && ae.RetryAfter > 0 {
			retryAfter = ae.RetryAfter
			policy.retryAfter = ae.RetryAfter
		}
		if oc := callOutcomeOf(err); oc == outcomeRateLimited && retryAfter == 0 {
			pause429 = &tn
		} else {
			w.fleet.report(tn, oc, retryAfter)
		}
		if err == nil {
			return nil
		}
		last, refused = err, nil
		if idenfy.Ambiguous(err) {
			a.ambiguous = true
		}
		if !retryable(err) {
			return backoff.Permanent(err)
		}
		return err
	}
	notify := func(err error, wait time.Duration) {
		if pause429 != nil {
			w.fleet.report(*pause429, outcomeRateLimited, wait)
			pause429 = nil
		}
		w.metrics.retried(t.op)
		t.logger().Debug().Err(err).Int("attempt", a.count).Str("wait", wait.String()).Msg("retrying the iDenfy call")
	}
	err := backoff.RetryNotifyWithTimer(op, backoff.WithContext(policy, soft), notify, &clockTimer{clock: w.clock})
	if pause429 != nil {
		w.fleet.report(*pause429, outcomeRateLimited, 0)
	}
	switch {
	case err == nil:
		return nil
	case refused != nil:
		// The fleet refused the last attempt (a pause, the breaker, no
		// turn of the rate limit within the budget): that is the answer,
		// with when to ask again; earlier attempts stay counted in a.
		return refused
	case last == nil:
		return err
	}
	return last
}

// turnDeadline bounds how long a task waits for a turn of the fleet: a
// request its retry budget, a job until it passes the job max age (its
// delivery is kept alive meanwhile, so it waits in the worker, not by
// spending deliveries).
func (w *Worker) turnDeadline(t *task) time.Time {
	if t.job != nil {
		return t.job.published.Add(w.cfg.JobMaxAge)
	}
	return time.Now().Add(w.cfg.RetryMaxElapsed)
}

// takeTurn asks the fleet for a turn until by. An idle fleet grants it at
// once, and then the budget's context and timer are not made at all: most
// calls never wait.
func (w *Worker) takeTurn(soft context.Context, by time.Time, t *task) (turn, error) {
	if w.fleet.idle() {
		return turn{}, nil
	}
	budget, cancel := context.WithDeadline(soft, by)
	defer cancel()
	return w.admitTurn(budget, t)
}

// admitTurn asks the fleet for a turn. A job waits out an open breaker
// rather than failing, trying for the fleet's probe each time one is due,
// until the breaker closes or its budget ends.
func (w *Worker) admitTurn(ctx context.Context, t *task) (turn, error) {
	for {
		tn, err := w.fleet.admit(ctx, t.intake == intakeRequest)
		var r *fleetRefusal
		if t.job == nil || !errors.As(err, &r) || r.Reason != refusedBreakerOpen {
			return tn, err
		}
		w.breakerWaits.Add(1)
		// Wall time: the breaker's state comes over the network. A probe
		// overdue (its taker gone) is tried for again, but not in a loop.
		select {
		case <-w.fleet.breakerClosed():
		case <-time.After(max(r.RetryAfter, breakerPoll)):
		case <-ctx.Done():
		}
		w.breakerWaits.Add(-1)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return turn{}, messages.NewError(messages.CodeExpired, fmt.Sprintf(
				"the job waited for iDenfy to be available again past the job max age of %s", w.cfg.JobMaxAge))
		}
		if ctx.Err() != nil {
			return turn{}, ctx.Err()
		}
	}
}

// retryable reports whether an attempt's error is worth another attempt:
// connection errors, timeouts, 429, 500, 502, 503, 504, and 2xx answers that
// could not be read. Never other 4xx, never a cancelled request.
func retryable(err error) bool {
	if errors.Is(err, idenfy.ErrRateLimited) {
		return true
	}
	var ae *idenfy.APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var te *idenfy.TransportError
	if errors.As(err, &te) {
		return !errors.Is(err, context.Canceled)
	}
	return errors.Is(err, idenfy.ErrInvalidResponse)
}

// contractError maps the last error of a request to the contract's error
// code. It is the one table from errors to codes.
func contractError(err error, a *attempts) *messages.Error {
	var me *messages.Error
	if errors.As(err, &me) {
		return me
	}
	var fr *fleetRefusal
	if errors.As(err, &fr) {
		return fr.contractError()
	}
	over := a.summary()
	var ae *idenfy.APIError
	switch {
	case errors.Is(err, idenfy.ErrUnauthorized):
		errors.As(err, &ae)
		return messages.NewError(messages.CodeUnauthorized,
			fmt.Sprintf("iDenfy refused the worker's credentials (HTTP %d): an operator must check the API key and secret", ae.Status))
	case errors.Is(err, idenfy.ErrQuotaExhausted):
		return messages.NewError(messages.CodeQuotaExhausted, "iDenfy has no credits or funds left for this account")
	case errors.Is(err, idenfy.ErrRateLimited):
		e := messages.NewError(messages.CodeRateLimited, "iDenfy answered 429 (too many requests) "+over)
		e.RetryAfter = 1
		if errors.As(err, &ae) && ae.RetryAfter > 0 {
			e.RetryAfter = wholeSeconds(ae.RetryAfter)
		}
		return e
	case errors.Is(err, idenfy.ErrServerError):
		errors.As(err, &ae)
		return messages.NewError(messages.CodeUpstreamUnavailable, fmt.Sprintf("iDenfy answered %d %s", ae.Status, over))
	case errors.As(err, &ae):
		if ae.Status >= 400 && ae.Status < 500 {
			msg := fmt.Sprintf("iDenfy rejected the request (HTTP %d", ae.Status)
			if ae.Identifier != "" {
				msg += " " + ae.Identifier
			}
			return messages.NewError(messages.CodeUpstreamRejected, msg+"): "+ae.Message)
		}
		return messages.NewError(messages.CodeUpstreamUnavailable, fmt.Sprintf("iDenfy answered an unexpected HTTP %d", ae.Status))
	case errors.Is(err, idenfy.ErrInvalidResponse):
		return messages.NewError(messages.CodeUpstreamUnavailable, "iDenfy's answer could not be read "+over)
	}
	var te *idenfy.TransportError
	if errors.As(err, &te) {
		what := "could not reach iDenfy"
		if te.Timeout() {
			what = "iDenfy did not answer in time"
		}
		return messages.NewError(messages.CodeUpstreamUnavailable, what+" "+over)
	}
	return messages.NewError(messages.CodeUpstreamUnavailable, "iDenfy call failed "+over)
}

// summary says "on 3 attempts over 20s" for error messages.
func (a *attempts) summary() string {
	if a.count <= 1 {
		return "on 1 attempt"
	}
	return fmt.Sprintf("on %d attempts over %s", a.count, a.last.Sub(a.first).Round(100*time.Millisecond))
}

// contractError is the answer to a call the fleet refused, with when to ask
// again.
func (e *fleetRefusal) contractError() *messages.Error {
	code := messages.CodeRateLimited
	if e.Reason == refusedBreakerOpen {
		code = messages.CodeUpstreamUnavailable
	}
	me := messages.NewError(code, e.Error())
	me.RetryAfter = e.retryAfterSeconds()
	return me
}

// wholeSeconds rounds d up to whole seconds, at least 1, for
// error.retry_after.
func wholeSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}
