package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// A job whose last delivery went unanswered (its worker died holding it, or
// a poison job brought every worker that took it down) would stay in the
// stream forever: JetStream stops delivering it and says so in a
// max-deliveries advisory. One worker of the queue group takes each
// advisory, answers the job from what the store knows, and removes it.

// maxDeliveriesSubject is where JetStream announces a job that used up its
// deliveries.
func (w *Worker) maxDeliveriesSubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + w.cfg.Stream + "." + w.cfg.Consumer
}

// deliveriesExceeded is the advisory's payload, as far as it matters here.
type deliveriesExceeded struct {
	Stream     string `json:"stream"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

func (w *Worker) watchStranded() (*nats.Subscription, error) {
	return w.nc.QueueSubscribe(w.maxDeliveriesSubject(), messages.QueueGroup, func(m *nats.Msg) {
		var adv deliveriesExceeded
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			w.log.Warn().Str("subject", m.Subject).Msg("unreadable max-deliveries advisory")
			return
		}
		if !w.tasks.add() {
			return // stopping: another worker, or this one's next start, sees the job in the stream
		}
		go func() {
			defer w.tasks.done()
			w.answerStranded(adv)
		}()
	})
}

// answerStranded publishes the result of a job that used up its
// deliveries, then removes the job from the stream: the stored outcome
// when it has one; outcome_unknown when a worker had claimed it (it may
// have called iDenfy before it vanished); else upstream_unavailable.
func (w *Worker) answerStranded(adv deliveriesExceeded) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*storeTimeout)
	defer cancel()
	stream, err := w.js.Stream(ctx, w.cfg.Stream)
	if err != nil {
		w.log.Warn().Err(err).Uint64("stream_seq", adv.StreamSeq).Msg("a stranded job cannot be read")
		return
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return // answered and acked meanwhile
	}
	if err != nil {
		w.log.Warn().Err(err).Uint64("stream_seq", adv.StreamSeq).Msg("a stranded job cannot be read")
		return
	}
	op := opSend
	switch raw.Subject {
	case w.subj.JobsSend:
	case w.subj.JobsVerify:
		op = opVerify
	default:
		_ = stream.DeleteMsg(ctx, adv.StreamSeq)
		return
	}
	t := &task{op: op, intake: intakeJob, w: w}
	if id := raw.Header.Get(messages.HeaderMsgID); id != "" {
		t.key = msgIDKey(id)
	} else {
		t.key = seqKey(w.cfg.Stream, stream.CachedInfo().Created, adv.StreamSeq)
	}
	o := w.strandedOutcome(ctx, t, raw.Data, adv.Deliveries)
	replyTo := raw.Header.Get(messages.HeaderReplyTo)
	if !validSubject(replyTo) {
		replyTo = ""
	}
	w.publishResult(t, o.encode(), replyTo)
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.logger().Warn().Err(err).Msg("removing a stranded job failed")
	}
	w.metrics.outcome(t, o, 0)
	t.logger().Warn().Uint64("stream_seq", adv.StreamSeq).Uint64("deliveries", adv.Deliveries).
		Str("status", string(o.status())).Msg("answered a job that used up its deliveries")
}

func (w *Worker) strandedOutcome(ctx context.Context, t *task, data []byte, deliveries uint64) *outcome {
	if e := t.decode(data); e != nil {
		return failed(t, attempts{}, e)
	}
	entry, err := w.store.kv.Get(ctx, w.store.idempotencyKey(t.op, t.key))
	var rec record
	switch {
	case err == nil && json.Unmarshal(entry.Value(), &rec) == nil && rec.State == stateDone:
		if o, err := decodeOutcome(t.op, rec.Result); err == nil {
			return o
		}
	case err == nil && rec.State == stateClaimed:
		return failed(t, attempts{count: rec.Attempts, ambiguous: true}, messages.NewError(messages.CodeOutcomeUnknown,
			fmt.Sprintf("the job used up its %d deliveries while a worker held it; iDenfy may have been called", deliveries)))
	}
	return failed(t, attempts{count: rec.Attempts}, messages.NewError(messages.CodeUpstreamUnavailable,
		fmt.Sprintf("the job used up its %d deliveries without an answer", deliveries)))
}
