package worker

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// What both intakes do once a task has its outcome: publish the result
// event, count it, and log the one line each request gets.

// eventBudget bounds how long a result event waits for the results stream
// to store it (a server failing over, a stream leader being elected).
const eventBudget = 10 * time.Second

// pendingEvent is a job's result event sent to the results stream, whose
// ack publishResult awaits.
type pendingEvent struct {
	msg *nats.Msg
	// ack is nil when the results stream is off, or when the asynchronous
	// publish could not start; publishResult then publishes it itself.
	ack jetstream.PubAckFuture
}

// resultMsg is the result event of t, with body. Its Nats-Msg-Id is the
// same whenever the same outcome of the same idempotency key is published
// again (a job redelivered after its ack was lost, a duplicate answered
// from the store), so the stream keeps it once and core observers can tell.
func (w *Worker) resultMsg(t *task, body []byte) *nats.Msg {
	msg := &nats.Msg{Subject: w.routes[t.op].results, Data: body}
	if t.key != "" {
		msg.Header = nats.Header{messages.HeaderMsgID: []string{w.eventID(t, body)}}
	}
	return msg
}

// sendEvent starts storing the result event of t in the results stream,
// without waiting: the intake records the outcome meanwhile, and
// publishResult waits for the stream's ack.
func (w *Worker) sendEvent(t *task, body []byte) *pendingEvent {
	ev := &pendingEvent{msg: w.resultMsg(t, body)}
	if w.cfg.ResultsStream != ResultsStreamOff {
		// A publish that cannot start (maxEventsPending events unacked
		// for the publisher's short stall wait) is tried again, and
		// waited for, by publishResult.
		ev.ack, _ = w.jobEvents.PublishMsgAsync(ev.msg)
	}
	return ev
}

// publishResult publishes the result event ev of t: on its operation's
// results subject, stored in the results stream with its ack awaited
// (unless that stream is off), and on replyTo when set (the caller's
// subject: a core publish). It returns an error when the event could not be
// stored; a job is then handed back instead of acked, so that its
// redelivery publishes the stored outcome again.
func (w *Worker) publishResult(t *task, ev *pendingEvent, replyTo string) error {
	msg := ev.msg
	var err error
	if w.cfg.ResultsStream == ResultsStreamOff {
		if err = w.nc.PublishMsg(msg); err != nil {
			t.logger().Warn().Err(err).Str("subject", msg.Subject).Msg("publishing the result failed")
		}
	} else if err = w.awaitEvent(ev); err != nil {
		w.metrics.eventLost(t.op)
		t.logger().Error().Err(err).Str("stream", w.cfg.ResultsStream).Msg("storing the result event failed")
		// The job goes back and its redelivery publishes again, to
		// Reply-To too: only once it is stored, so the caller hears once.
		return err
	}
	if replyTo != "" {
		// With the event's Nats-Msg-Id, so that a caller who hears the same
		// outcome again (a lost ack, a duplicate) can tell. A denied
		// Reply-To is reported by the server asynchronously, and logged by
		// the connection's error handler with its subject.
		reply := &nats.Msg{Subject: replyTo, Data: msg.Data, Header: msg.Header}
		if err := w.nc.PublishMsg(reply); err != nil {
			t.logger().Warn().Err(err).Str("subject", replyTo).Msg("publishing the result to Reply-To failed")
		}
	}
	return err
}

// awaitEvent waits for the results stream to store ev. An asynchronous
// publish that failed or timed out is tried again, with backoff, for
// eventBudget: the event's Nats-Msg-Id keeps a second copy out.
func (w *Worker) awaitEvent(ev *pendingEvent) error {
	if ev.ack != nil {
		select {
		case <-ev.ack.Ok():
			return nil
		case <-ev.ack.Err():
		case <-w.hard.Done():
			// select picks at random among ready cases: an ack already
			// in is not reported lost because the stop came too.
			select {
			case <-ev.ack.Ok():
				return nil
			default:
				return w.hard.Err()
			}
		}
	}
	return w.storeEvent(ev.msg)
}

// publishAnswered publishes the result event of a request that its caller
// has been answered: stored in the results stream without waiting for the
// ack, so that neither micro's callback nor the request's slot waits for
// the stream. An event the stream does not take within eventBudget is
// logged and counted by the asynchronous publisher (see newEventPublisher).
func (w *Worker) publishAnswered(t *task, body []byte) {
	if w.cfg.ResultsStream == ResultsStreamOff {
		_ = w.publishResult(t, w.sendEvent(t, body), "")
		return
	}
	msg := w.resultMsg(t, body)
	if _, err := w.events.PublishMsgAsync(msg, jetstream.WithStallWait(time.Second)); err != nil {
		w.metrics.eventLost(t.op)
		t.logger().Error().Err(err).Str("stream", w.cfg.ResultsStream).Msg("storing the result event failed")
	}
}

// maxEventsPending bounds the request events published and not yet acked.
const maxEventsPending = 4096

// newEventPublisher is the JetStream context of publishAnswered: its
// failures come back here, after the request was answered.
func (w *Worker) newEventPublisher() (jetstream.JetStream, error) {
	return jetstream.New(w.nc,
		jetstream.WithPublishAsyncMaxPending(maxEventsPending),
		jetstream.WithPublishAsyncTimeout(eventBudget),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) {
			op, _ := w.routes.resultsOp(msg.Subject)
			w.metrics.eventLost(op)
			w.log.Error().Err(err).Str("subject", msg.Subject).Str("stream", w.cfg.ResultsStream).
				Msg("storing the result event of an answered request failed")
		}))
}

// newJobEventPublisher is the JetStream context of sendEvent. Its failures
// are the intake's to handle (publishResult tries again, or the job goes
// back), so it has no error handler; an ack not heard within storeTimeout
// is given up on and the event sent again.
func (w *Worker) newJobEventPublisher() (jetstream.JetStream, error) {
	return jetstream.New(w.nc,
		jetstream.WithPublishAsyncMaxPending(maxEventsPending),
		jetstream.WithPublishAsyncTimeout(storeTimeout))
}

// eventID is the Nats-Msg-Id of a result event: a keyed hash of the
// idempotency key and the result, which holds the correlation_id, so that
// the same outcome answered to another correlation_id is an event of its
// own.
func (w *Worker) eventID(t *task, body []byte) string {
	return "result-" + w.hash.sum("event", t.op.String()+"\x00"+t.key+"\x00"+string(body))
}

// storeEvent publishes msg to the results stream and waits for its ack,
// trying again for eventBudget while the stream does not answer.
func (w *Worker) storeEvent(msg *nats.Msg) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(time.Second),
		backoff.WithMaxElapsedTime(eventBudget),
	), w.hard)
	return backoff.Retry(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		resp, err := w.nc.RequestMsgWithContext(ctx, msg)
		if errors.Is(err, nats.ErrNoResponders) {
			return errors.New("the results stream " + w.cfg.ResultsStream + " did not answer (no responders)")
		}
		if err != nil {
			return err
		}
		_, err = parseAck(resp.Data)
		return err
	}, b)
}

// observe counts a task's outcome and logs it.
func (w *Worker) observe(t *task, o *outcome, elapsed time.Duration) {
	w.metrics.outcome(t, o, elapsed)
	logOutcome(t, o, elapsed)
}

// logOutcome writes the one line each request gets: what, for whom (masked),
// how many attempts, how long upstream took, and how it ended.
func logOutcome(t *task, o *outcome, elapsed time.Duration) {
	e := o.err()
	level := zerolog.InfoLevel
	if e != nil && !e.Code.IsInvalidInput() {
		level = zerolog.WarnLevel
	}
	// Below the logger's level the line is not written: the task's logger,
	// a keyed hash and a masked number, is not built for it either.
	if level < t.w.log.GetLevel() || level < zerolog.GlobalLevel() {
		return
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
