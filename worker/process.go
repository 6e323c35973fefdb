package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// storeTimeout bounds one KV operation.
const storeTimeout = 5 * time.Second

// run takes an admitted task to an outcome: the idempotency
// store first (a known outcome is republished; a key claimed by a live
// worker is waited for), then the handler core, then the outcome recorded.
// Its parts are functions of their own so that run's frame stays small: it
// sits on the stack of every request waiting on iDenfy.
func (w *Worker) run(t *task) *outcome {
	// Shutdown ends soft before hard, so soft also covers a hard stop.
	soft := w.soft
	if t.key == "" {
		o := w.handle(soft, w.hard, t, record{})
		w.settle(t, o)
		return o
	}
	c, release, o := w.claimKey(soft, t)
	if o != nil {
		return o
	}
	defer release()
	stop := w.keepClaim(c, t.logger(), t.job)
	o = w.handle(soft, w.hard, t, c.rec)
	w.record(t, c, o)
	stop()
	return o
}

// claimKey claims the task's idempotency key, or returns the outcome that
// ends the task instead: a stored one, a refusal, a hand-back. release
// gives the key back to the other tasks of this process.
func (w *Worker) claimKey(soft context.Context, t *task) (c *claim, release func(), o *outcome) {
	key := w.store.idempotencyKey(t.op, t.key)
	held, o := w.holdLocally(soft, t, key)
	if o != nil {
		return nil, nil, o
	}
	defer func() {
		if c == nil {
			held()
		}
	}()
	fingerprint := t.fingerprint(w.store)
	for {
		ctx, done := context.WithTimeout(w.hard, storeTimeout)
		acq, err := w.store.acquire(ctx, key, fingerprint, true, w.isMine)
		done()
		switch {
		case err != nil:
			return nil, nil, storeError(t, attempts{}, "reading the idempotency key failed", err)
		case acq.mismatch:
			return nil, nil, failed(t, attempts{}, messages.NewError(messages.CodeInvalidRequest,
				"this Nats-Msg-Id was already used for a different request; use a new one per request"))
		case acq.done:
			o, err := decodeOutcome(t.op, acq.stored)
			if err != nil {
				return nil, nil, storeError(t, attempts{}, "a stored outcome is unreadable", err)
			}
			// The outcome is the first request's; the envelope is this one's.
			if id := t.correlationID(); id != "" {
				o.send.CorrelationID, o.verify.CorrelationID = id, id
			}
			w.metrics.dedupHit(t.intake)
			return nil, nil, o
		case acq.claim != nil:
			return acq.claim, held, nil
		}
		if o, stop := w.waitBusy(soft, t, acq.busy); stop {
			return nil, nil, o
		}
	}
}

// holdLocally waits until no other task of this process holds key, then
// holds it. A job whose key is held goes back to the stream instead (unless
// this is its last delivery).
func (w *Worker) holdLocally(soft context.Context, t *task, key string) (release func(), o *outcome) {
	for {
		release, busy := w.holdKey(key)
		if release != nil {
			return release, nil
		}
		if t.job != nil && !t.job.last {
			return nil, &outcome{op: t.op, handBack: true, delay: time.Second}
		}
		select {
		case <-busy:
		case <-soft.Done():
			o := shuttingDown(t, attempts{})
			o.handBack = t.job != nil
			return nil, o
		}
	}
}

// record decides whether a job goes back to the stream, then stores the
// outcome (or hands the claim back) under the task's key.
func (w *Worker) record(t *task, c *claim, o *outcome) {
	if t.job != nil && !o.handBack {
		o.delay, o.handBack = t.job.retryLater(o)
	}
	w.settle(t, o)

	// The outcome must be stored before the job is acked or the request
	// answered, or a duplicate would call iDenfy again: a store that is
	// briefly away (a NATS restart) is waited for, with the claim's lease
	// still renewed, up to recordBudget.
	// A failure that asking again may mend is not the key's final outcome:
	// the key is handed back, so that the same Nats-Msg-Id asked again is
	// tried again. Unless an attempt may have reached iDenfy: then the
	// outcome is final, since trying again could text the user again.
	release := o.handBack
	if e := o.err(); e != nil && e.Retryable && !o.a.ambiguous {
		release = true
	}
	var result []byte
	if !release {
		result = o.encode()
	}
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(recordBudget),
	), w.hard)
	err := backoff.Retry(func() error {
		ctx, done := context.WithTimeout(context.Background(), storeTimeout)
		defer done()
		var err error
		if release {
			err = w.store.release(ctx, c, &o.a, o.counted)
		} else {
			err = w.store.finish(ctx, c, &o.a, o.counted, result)
		}
		if errors.Is(err, errClaimLost) {
			return backoff.Permanent(err)
		}
		return err
	}, b)
	if err != nil {
		t.logger().Error().Err(err).Bool("hand_back", o.handBack).
			Msg("recording the outcome in the idempotency store failed; a duplicate of this request would call iDenfy again")
	}
}

// recordBudget bounds how long an outcome waits for the store to take it.
const recordBudget = 30 * time.Second

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
		t.logger().Warn().Err(err).Msg("giving back the send-limit place of a failed send failed")
		return
	}
	o.counted = false
}

// waitBusy handles a key another worker holds. A job goes back to the
// stream, to return when the holder is likely done (unless this is its last
// delivery); a request waits a little and asks again. It returns stop with
// the outcome when the task must end here.
func (w *Worker) waitBusy(soft context.Context, t *task, busy time.Duration) (*outcome, bool) {
	if t.job != nil && !t.job.last {
		return &outcome{op: t.op, handBack: true, delay: busy + 100*time.Millisecond}, true
	}
	// Polling is a network matter, paced by the wall clock; whether the
	// holder's lease ran out is judged on the worker's clock. A job on its
	// last delivery that waits here keeps its delivery alive.
	if t.job != nil {
		_ = t.job.msg.InProgress()
	}
	select {
	case <-time.After(min(busy, time.Second)):
		return nil, false
	case <-soft.Done():
		o := shuttingDown(t, attempts{})
		o.handBack = t.job != nil
		return o, true
	}
}

// held is a claim under renewal.
type held struct {
	log     *zerolog.Logger
	job     *jobDelivery
	every   time.Duration
	renewed time.Time // wall clock
}

// keepClaim has the lease keeper renew a claim's lease, and tell JetStream
// that job (when not nil) is still being worked on, until stopped. Most
// calls end long before the first renewal is due, so registering is all
// they cost: no goroutine or timer per request.
func (w *Worker) keepClaim(c *claim, log *zerolog.Logger, job *jobDelivery) (stop func()) {
	h := &held{log: log, job: job, every: w.lease / 3, renewed: time.Now()}
	if job != nil {
		h.every = min(h.every, job.ackWait/3)
	}
	w.leaseMu.Lock()
	w.leases[c] = h
	w.leaseMu.Unlock()
	return func() {
		w.leaseMu.Lock()
		delete(w.leases, c)
		w.leaseMu.Unlock()
	}
}

// keepLeases renews the claims that are due, until the worker stops. The
// interval is wall time: it keeps network state alive, whatever the
// worker's clock says.
func (w *Worker) keepLeases() {
	tick := min(time.Second, w.lease/6)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-w.hard.Done():
			return
		case <-ticker.C:
		}
		now := time.Now()
		var due []*claim
		var dueHeld []*held
		w.leaseMu.Lock()
		for c, h := range w.leases {
			if now.Sub(h.renewed) >= h.every-tick/2 {
				h.renewed = now
				due = append(due, c)
				dueHeld = append(dueHeld, h)
			}
		}
		w.leaseMu.Unlock()
		var wg sync.WaitGroup
		for i, c := range due {
			wg.Add(1)
			go func(c *claim, h *held) {
				defer wg.Done()
				w.renew(c, h)
			}(c, dueHeld[i])
		}
		wg.Wait()
	}
}

func (w *Worker) renew(c *claim, h *held) {
	if h.job != nil {
		if err := h.job.msg.InProgress(); err != nil {
			h.log.Debug().Err(err).Msg("in-progress ack failed")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := w.store.renew(ctx, c); err != nil {
		h.log.Warn().Err(err).Msg("renewing a claim failed")
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
	ev := t.logger().WithLevel(level).
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
