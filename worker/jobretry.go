package worker

import (
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// The job retry policy: a job that met an outage or a rate limit longer
// than its retry budget goes back to the stream to be tried again later,
// rather than being answered with the failure (README, "Durable jobs").

// jobDelivery is one delivery of a job from the stream.
type jobDelivery struct {
	msg       jetstream.Msg
	published time.Time
	delivered uint64
	// last is set on the consumer's final delivery: the job must be
	// answered now, since handing it back would strand it.
	last    bool
	ackWait time.Duration
	maxAge  time.Duration
	// retryBase is the pause before the first retry of a job that failed
	// retryably; it doubles with each delivery.
	retryBase time.Duration
	replyTo   string
	now       func() time.Time
}

// retryLater decides whether a failed job goes back to the stream to be
// tried again after a pause, rather than being answered with the failure: an
// outage or rate limit that outlasted one retry budget, with no ambiguous
// attempt (which could text the user twice), while the job is young enough.
func (d *jobDelivery) retryLater(o *outcome) (time.Duration, bool) {
	e := o.err()
	if e == nil || d.last || o.a.ambiguous {
		return 0, false
	}
	if e.Code != messages.CodeUpstreamUnavailable && e.Code != messages.CodeRateLimited {
		return 0, false
	}
	delay := jobRetryDelay(d.retryBase, d.delivered)
	if d.now().Sub(d.published)+delay >= d.maxAge {
		return 0, false
	}
	return delay, true
}

// jobRetryMaxDelay caps the pause between deliveries of a job retried later.
const jobRetryMaxDelay = time.Minute

// jobRetryDelay is the pause before delivery delivered+1 of a job that
// failed retryably: base doubled with each delivery, up to a minute (by
// default 5s, 10s, 20s, 40s, then 60s). It is backoff/v4's exponential
// policy without jitter, read at the job's place in it: the stream, not a
// loop in this process, keeps the count.
func jobRetryDelay(base time.Duration, delivered uint64) time.Duration {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(base),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0),
		backoff.WithMaxInterval(jobRetryMaxDelay),
		backoff.WithMaxElapsedTime(0),
	)
	d := b.NextBackOff()
	for i := uint64(1); i < delivered && d < jobRetryMaxDelay; i++ {
		d = b.NextBackOff()
	}
	return min(d, jobRetryMaxDelay)
}
