package worker

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// storeTimeout bounds one KV operation.
const storeTimeout = 5 * time.Second

// run takes a task, with its pool slot held, to an outcome: the idempotency
// store first (a known outcome is republished; a key claimed by a live
// worker is waited for), then the handler core, then the outcome recorded.
func (w *Worker) run(t *task) outcome {
	// soft ends with shutdown or when a hard stop cuts everything.
	soft, cancel := context.WithCancel(w.hard)
	defer cancel()
	defer context.AfterFunc(w.soft, cancel)()
	hard := w.hard

	if t.key == "" {
		o := w.handle(soft, hard, t, record{})
		w.settle(t, &o)
		return o
	}
	key := w.store.idempotencyKey(t.op, t.key)
	fingerprint := t.fingerprint(w.store)
	var c *claim
	for c == nil {
		ctx, done := context.WithTimeout(hard, storeTimeout)
		acq, err := w.store.acquire(ctx, key, fingerprint, w.isMine)
		done()
		switch {
		case err != nil:
			return storeError(t, attempts{}, "reading the idempotency key failed", err)
		case acq.mismatch:
			return failed(t, attempts{}, messages.NewError(messages.CodeInvalidRequest,
				"this Nats-Msg-Id was already used for a different request; use a new one per request"))
		case acq.done:
			o, err := decodeOutcome(t.op, acq.stored)
			if err != nil {
				return storeError(t, attempts{}, "a stored outcome is unreadable", err)
			}
			// The outcome is the first request's; the envelope is this one's.
			if id := t.correlationID(); id != "" {
				o.send.CorrelationID, o.verify.CorrelationID = id, id
			}
			w.metrics.dedupHit(t.intake)
			return o
		case acq.claim != nil:
			c = acq.claim
			continue
		}
		if o, stop := w.waitBusy(soft, t, acq.busy); stop {
			return o
		}
	}

	w.markMine(key)
	defer w.unmarkMine(key)
	stop := w.keepClaim(c, t.log, t.job)
	o := w.handle(soft, hard, t, c.rec)
	stop()
	if t.job != nil && !o.handBack {
		o.delay, o.handBack = t.job.retryLater(&o)
	}
	w.settle(t, &o)

	ctx, done := context.WithTimeout(context.Background(), storeTimeout)
	defer done()
	var err error
	if o.handBack {
		err = w.store.release(ctx, c, &o.a, o.counted)
	} else {
		err = w.store.finish(ctx, c, &o.a, o.counted, o.encode())
	}
	if err != nil {
		t.log.Warn().Err(err).Bool("hand_back", o.handBack).Msg("recording the outcome in the idempotency store failed")
	}
	return o
}

// settle gives back the send-limit place of a send that ended in failure
// without any attempt that may have reached iDenfy: nobody was texted. A job
// handed back keeps its place for its next delivery.
func (w *Worker) settle(t *task, o *outcome) {
	if t.op != opSend || !o.counted || o.handBack || o.a.ambiguous || o.send.Status != messages.StatusFailed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := w.refundSend(ctx, t.send.PhoneNumber); err != nil {
		t.log.Warn().Err(err).Msg("giving back the send-limit place of a failed send failed")
		return
	}
	o.counted = false
}

// waitBusy handles a key another worker holds. A job goes back to the
// stream, to return when the holder is likely done (unless this is its last
// delivery); a request waits a little and asks again. It returns stop with
// the outcome when the task must end here.
func (w *Worker) waitBusy(soft context.Context, t *task, busy time.Duration) (outcome, bool) {
	if t.job != nil && !t.job.last {
		return outcome{op: t.op, handBack: true, delay: busy + 100*time.Millisecond}, true
	}
	// Polling is a network matter, paced by the wall clock; whether the
	// holder's lease ran out is judged on the worker's clock.
	select {
	case <-time.After(min(busy, time.Second)):
		return outcome{}, false
	case <-soft.Done():
		o := shuttingDown(t, attempts{})
		o.handBack = t.job != nil
		return o, true
	}
}

// keepClaim renews a claim's lease, and tells JetStream that job (when not
// nil) is still being worked on, until stopped. The interval is wall time:
// it keeps network state alive, whatever the worker's clock says.
func (w *Worker) keepClaim(c *claim, log zerolog.Logger, job *jobDelivery) (stop func()) {
	interval := w.lease / 3
	if job != nil {
		interval = min(interval, job.ackWait/3)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
			}
			if job != nil {
				if err := job.msg.InProgress(); err != nil {
					log.Debug().Err(err).Msg("in-progress ack failed")
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			err := w.store.renew(ctx, c)
			cancel()
			if err != nil {
				log.Warn().Err(err).Msg("renewing a claim failed")
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// logOutcome writes the one line each request gets: what, for whom (masked),
// how many attempts, how long upstream took, and how it ended.
func (w *Worker) logOutcome(t *task, o *outcome, elapsed time.Duration) {
	e := o.err()
	level := zerolog.InfoLevel
	if e != nil && !e.Code.IsInvalidInput() {
		level = zerolog.WarnLevel
	}
	ev := t.log.WithLevel(level).
		Str("status", string(o.status())).
		Int("attempts", o.attempts()).
		Dur("upstream_ms", o.a.upstream).
		Dur("elapsed_ms", elapsed)
	if o.stored {
		ev = ev.Bool("deduplicated", true)
	}
	if o.op == opSend && o.send.PossibleDuplicate {
		ev = ev.Bool("possible_duplicate", true)
	}
	if o.op == opSend && o.send.RequestID != "" {
		ev = ev.Str("request_id", o.send.RequestID)
	}
	if e != nil {
		ev = ev.Str("code", string(e.Code)).Str("error", e.Message)
	}
	ev.Msg(o.op.String() + " " + string(o.status()))
}

// taskLogger returns the logger of a task: every line it writes carries the
// operation, the intake and the caller's identifiers, never the code or the
// full number.
func (w *Worker) taskLogger(t *task) zerolog.Logger {
	c := w.log.With().Str("op", t.op.String()).Str("intake", t.intake)
	if id := t.correlationID(); id != "" {
		c = c.Str("correlation_id", id)
	}
	if t.op == opSend && t.send.PhoneNumber != "" {
		c = c.Str("phone", messages.MaskPhone(t.send.PhoneNumber))
	}
	if t.op == opVerify && t.verify.RequestID != "" {
		c = c.Str("request_id", t.verify.RequestID)
	}
	if t.key != "" && w.store != nil {
		c = c.Str("key", w.store.hash("log", t.key)[:12])
	}
	return c.Logger()
}
