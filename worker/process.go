package worker

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// run takes an admitted task to its outcome, walking the rooms in order:
// the claims store (a known outcome is republished; a key another worker
// holds is waited for), the handler core (guard, call, result), the job
// retry policy, the guard's refund, and the outcome recorded under the key.
// It runs under a recover: a panic while handling one request answers that
// request and is logged, and never takes the process down.
func (w *Worker) run(t *task) (o *outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = w.panicked(t, p)
		}
	}()
	// Shutdown ends soft before hard, so soft also covers a hard stop.
	soft, hard := w.soft, w.hard
	if t.key == "" {
		o = w.handleSafely(soft, hard, t, keyRecord{})
		w.guard.settle(t, o)
		return o
	}
	c, unlock, o := w.claims.claimRequest(soft, hard, t)
	if o != nil {
		return o
	}
	stop := w.claims.keep(c, t.newLogger, t.job)
	release := func() {
		stop()
		unlock()
	}
	defer func() {
		if release != nil {
			release()
		}
	}()
	o = w.handleSafely(soft, hard, t, c.rec)
	if t.job != nil && !o.handBack {
		o.delay, o.handBack = t.job.retryLater(o)
	}
	w.guard.settle(t, o)
	if t.job == nil {
		w.claims.record(hard, t, c, o)
		return o
	}
	// A job's outcome is recorded by the intake, with its result event
	// already on its way to the results stream (see jobIntake.answer): the
	// two writes overlap without a goroutine per job.
	done, recorded := release, o
	release = nil
	o.record = func() {
		defer done()
		w.claims.record(hard, t, c, recorded)
	}
	return o
}

// handleSafely is the handler core under a recover, so that a panic in it
// still has its outcome recorded under the task's claim (final, ambiguous):
// a duplicate is answered outcome_unknown from the store, not worked on
// again.
func (w *Worker) handleSafely(soft, hard context.Context, t *task, prior keyRecord) (o *outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = w.panicked(t, p)
		}
	}()
	return w.handle(soft, hard, t, prior)
}

// panicked is the outcome of a task whose handling panicked: nothing is
// known of where it stopped, iDenfy may have been called.
func (w *Worker) panicked(t *task, p any) *outcome {
	t.logger().Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).
		Msg("panic while handling a request; it is answered outcome_unknown and the worker goes on")
	w.metrics.panicked(t.op)
	o := failed(t, attempts{ambiguous: true}, messages.NewError(messages.CodeOutcomeUnknown,
		"the worker failed while handling this request; iDenfy may have been called"))
	if t.op == opSend {
		// A new send is the way forward, even though it may text again.
		o.send.Error.Retryable = true
		o.send.PossibleDuplicate = true
	}
	return o
}
