package worker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// jobIntake pulls jobs from the shared durable consumer into the pool.
type jobIntake struct {
	w         *Worker
	consuming atomic.Bool

	mu      sync.Mutex
	cons    jetstream.Consumer
	created time.Time // of the stream, for the keys of jobs without Nats-Msg-Id
	iter    jetstream.MessagesContext
	done    chan struct{}
}

func newJobIntake(w *Worker, cons jetstream.Consumer, created time.Time) *jobIntake {
	return &jobIntake{w: w, cons: cons, created: created, done: make(chan struct{})}
}

// pullBatch is how many jobs a worker keeps buffered ahead of its pool:
// enough to keep the pool fed, few enough that none waits in the buffer
// long enough for its AckWait to run out.
func (j *jobIntake) pullBatch() int {
	return min(j.w.cfg.Concurrency, 256)
}

// run consumes until stop. When the consumer goes away (deleted by an
// operator, lost heartbeats after a server restart), it sets it up again,
// waiting longer after each failed try, and goes on.
func (j *jobIntake) run() {
	defer close(j.done)
	w := j.w
	retry := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(10*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	for !w.stopping() {
		if w.fleet.open() {
			j.waitBreaker()
			continue
		}
		j.mu.Lock()
		cons := j.cons
		j.mu.Unlock()
		iter, err := cons.Messages(
			jetstream.PullMaxMessages(j.pullBatch()),
			// Two missed heartbeats end the iterator and set the consumer
			// up again: a pull lost while another worker was just creating
			// the consumer costs 4s, not 10.
			jetstream.PullHeartbeat(2*time.Second),
			jetstream.WithMessagesErrOnMissingHeartbeat(true),
		)
		if err == nil {
			j.mu.Lock()
			if w.stopping() {
				j.mu.Unlock()
				iter.Stop()
				return
			}
			j.iter = iter
			j.mu.Unlock()
			j.consuming.Store(true)
			stopWatch := j.drainWhenBreakerOpens(iter)
			err = j.consume(iter)
			opened := stopWatch()
			j.consuming.Store(false)
			if w.stopping() {
				return
			}
			retry.Reset()
			if opened {
				continue
			}
		}
		w.log.Warn().Err(err).Msg("jobs consumer interrupted; setting it up again")
		select {
		case <-time.After(retry.NextBackOff()):
		case <-w.soft.Done():
			return
		}
		ctx, cancel := context.WithTimeout(w.soft, 10*time.Second)
		cons, created, err := w.ensureJobs(ctx)
		cancel()
		if err != nil {
			w.log.Warn().Err(err).Msg("jobs consumer set-up failed")
			continue
		}
		j.mu.Lock()
		j.cons, j.created = cons, created
		j.mu.Unlock()
	}
}

// drainWhenBreakerOpens stops pulling from iter once the fleet's breaker
// opens: the jobs already pulled are worked on (they wait in the worker for
// the breaker, their deliveries kept alive), the rest stay in the stream.
// stop ends the watch and reports whether it drained iter.
func (j *jobIntake) drainWhenBreakerOpens(iter jetstream.MessagesContext) (stop func() bool) {
	done := make(chan struct{})
	var drained atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(breakerPoll)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if j.w.fleet.open() {
				drained.Store(true)
				iter.Drain()
				return
			}
		}
	})
	return func() bool {
		close(done)
		wg.Wait()
		return drained.Load()
	}
}

// breakerPoll is how often the jobs intake looks at the fleet's breaker.
const breakerPoll = 100 * time.Millisecond

// waitBreaker leaves the jobs in the stream while the fleet's breaker is
// open, so that they spend no deliveries. Someone must probe iDenfy,
// though: each probe interval, when no job of this process already waits
// for the breaker, it takes one job, which tries for the fleet's probe. It
// returns once the breaker closes, or at shutdown.
func (j *jobIntake) waitBreaker() {
	w := j.w
	w.log.Info().Msg("the fleet's circuit breaker is open: jobs stay in the stream")
	// Leaving jobs in the stream is serving: the worker stays ready.
	j.consuming.Store(true)
	defer j.consuming.Store(false)
	for w.fleet.open() && !w.stopping() {
		if w.breakerWaits.Load() == 0 {
			j.fetchOne()
		}
		select {
		case <-w.fleet.breakerClosed():
		case <-time.After(w.cfg.BreakerProbe):
		case <-w.soft.Done():
		}
	}
}

// fetchOne takes one job from the stream, if there is one, and works on it.
func (j *jobIntake) fetchOne() {
	w := j.w
	j.mu.Lock()
	cons := j.cons
	j.mu.Unlock()
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		w.log.Debug().Err(err).Msg("fetching a job to probe iDenfy with failed")
		return
	}
	for msg := range batch.Messages() {
		place := w.admission.enter(w.soft.Done(), intakeJob)
		if place == nil {
			_ = msg.Nak()
			continue
		}
		w.admission.spawn(func() {
			defer place.leave()
			j.process(msg, place)
		})
	}
}

// consume admits each job into the worker. It waits for room only once it
// holds a job: room held while waiting for the next job is room that
// requests cannot use. The pull batch bounds how far jobs are pulled ahead.
func (j *jobIntake) consume(iter jetstream.MessagesContext) error {
	w := j.w
	for {
		msg, err := iter.Next()
		if err != nil {
			iter.Stop()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) && w.stopping() {
				return nil
			}
			return err
		}
		place := w.admission.enter(w.soft.Done(), intakeJob)
		if place == nil {
			_ = msg.Nak()
			handBackBuffered(iter)
			return nil
		}
		w.admission.spawn(func() {
			defer place.leave()
			j.process(msg, place)
		})
	}
}

// handBackBuffered returns the jobs pulled but not started to the stream at
// once, so that another worker gets them without waiting for their ack wait.
func handBackBuffered(iter jetstream.MessagesContext) {
	iter.Drain()
	for {
		msg, err := iter.Next()
		if err != nil {
			return
		}
		_ = msg.Nak()
	}
}

// stop ends pulling: the consume loop hands back what was buffered.
func (j *jobIntake) stop() {
	j.mu.Lock()
	if j.iter != nil {
		j.iter.Drain()
	}
	j.mu.Unlock()
	<-j.done
}

func (j *jobIntake) process(msg jetstream.Msg, place *slot) {
	w := j.w
	start := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Str("subject", msg.Subject()).Msg("job without JetStream metadata; terminating it")
		_ = msg.Term()
		return
	}
	j.mu.Lock()
	cfg, created := j.cons.CachedInfo().Config, j.created
	j.mu.Unlock()
	last := cfg.MaxDeliver > 0 && meta.NumDelivered >= uint64(cfg.MaxDeliver)
	if w.stopping() && !last {
		_ = msg.Nak() // another worker takes it; a last delivery is answered here
		return
	}
	op, ok := w.routes.jobOp(msg.Subject())
	if !ok {
		w.log.Error().Str("subject", msg.Subject()).Msg("job on a subject that is neither send nor verify; terminating it")
		_ = msg.TermWithReason("unknown job subject")
		return
	}
	d := &jobDelivery{
		msg:       msg,
		published: meta.Timestamp,
		delivered: meta.NumDelivered,
		last:      last,
		ackWait:   cfg.AckWait,
		maxAge:    w.cfg.JobMaxAge,
		retryBase: w.jobRetryBase,
		now:       w.clock.Now,
	}
	if d.ackWait <= 0 {
		d.ackWait = jobAckWait
	}
	t := &task{op: op, intake: intakeJob, job: d, w: w, slot: place,
		key: jobKey(msg.Headers(), meta.Stream, created, meta.Sequence.Stream)}
	var refused string
	if d.replyTo, refused = replyTo(msg.Headers()); refused != "" {
		// The task's logger is made once, after decoding: this line goes
		// without the request's identifiers.
		w.log.Warn().Str("reply_to", refused).Msg("ignoring a Reply-To header that is not a subject the worker may publish to")
	}

	if e := t.decode(msg.Data()); e != nil {
		o := failed(t, attempts{}, e)
		j.answer(t, o, start)
		return
	}
	o := w.run(t)
	if o.handBack && d.last {
		e := o.err()
		reason := "it was handed back"
		if e != nil {
			reason = e.Message
		}
		record := o.record
		e = messages.NewError(messages.CodeUpstreamUnavailable,
			"the job reached its last delivery ("+strconv.FormatUint(d.delivered, 10)+") without an answer: "+reason)
		if t.op == opVerify && o.a.ambiguous {
			// A false could not be trusted now; nor can the silence.
			e = messages.NewError(messages.CodeOutcomeUnknown,
				"the job reached its last delivery without an answer, and an attempt may have been accepted by iDenfy; send a new code")
		}
		o = failed(t, o.a, e)
		o.record = record
	}
	if o.handBack {
		j.handBack(t, o)
		return
	}
	j.answer(t, o, start)
}

// answer publishes the result, then acks: a job is acked only once its
// outcome is recorded and its result event stored. The event is sent
// first and the outcome recorded while the stream stores it. Should the ack
// be lost, or the event not be stored, the redelivery finds the stored
// outcome and publishes it again without calling iDenfy.
func (j *jobIntake) answer(t *task, o *outcome, start time.Time) {
	w := j.w
	ev := w.sendEvent(t, o.encode())
	o.recordNow()
	err := w.publishResult(t, ev, t.job.replyTo)
	if err != nil {
		delay := jobRetryDelay(t.job.retryBase, t.job.delivered)
		if nerr := t.job.msg.NakWithDelay(delay); nerr != nil {
			t.logger().Warn().Err(nerr).Msg("handing back a job whose result was not stored failed; it returns after its ack wait")
		}
		w.metrics.handedBack(t.op)
		return
	}
	if err := t.job.msg.Ack(); err != nil {
		t.logger().Warn().Err(err).Msg("acking the job failed; it will be redelivered and answered from the store")
	}
	w.observe(t, o, time.Since(start))
}

func (j *jobIntake) handBack(t *task, o *outcome) {
	o.recordNow()
	var err error
	if o.delay > 0 {
		err = t.job.msg.NakWithDelay(o.delay)
	} else {
		err = t.job.msg.Nak()
	}
	if err != nil {
		t.logger().Warn().Err(err).Msg("handing the job back failed; it returns after its ack wait")
	}
	j.w.metrics.handedBack(t.op)
	ev := t.logger().Debug().Str("delay", o.delay.String()).Uint64("delivery", t.job.delivered)
	if e := o.err(); e != nil {
		ev = ev.Str("reason", e.Message)
	}
	ev.Msg("job handed back")
}
