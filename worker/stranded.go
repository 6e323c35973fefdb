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
// advisory, answers the job from what the claims store knows, and removes
// it.

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
		if !w.admission.tasks.add() {
			return // stopping: another worker, or this one's next start, sees the job in the stream
		}
		go func() {
			defer w.admission.tasks.done()
			w.answerStranded(adv)
		}()
	})
}

// answerStranded publishes the result of a job that used up its
// deliveries, then removes the job from the stream.
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
	op, ok := w.routes.jobOp(raw.Subject)
	if !ok {
		_ = stream.DeleteMsg(ctx, adv.StreamSeq)
		return
	}
	t := &task{op: op, intake: intakeJob, w: w,
		key: jobKey(raw.Header, w.cfg.Stream, stream.CachedInfo().Created, adv.StreamSeq)}
	o := w.strandedOutcome(ctx, t, raw.Data, adv.Deliveries)
	reply, _ := replyTo(raw.Header)
	if err := w.publishResult(t, w.sendEvent(t, o.encode()), reply); err != nil {
		// Kept in the stream, unanswered but not lost, for an operator.
		t.logger().Error().Uint64("stream_seq", adv.StreamSeq).Msg("a job that used up its deliveries stays in the stream: its result could not be stored")
		return
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.logger().Warn().Err(err).Msg("removing a stranded job failed")
	}
	w.metrics.outcome(t, o, 0)
	t.logger().Warn().Uint64("stream_seq", adv.StreamSeq).Uint64("deliveries", adv.Deliveries).
		Str("status", string(o.status())).Msg("answered a job that used up its deliveries")
}

// strandedOutcome is what a job that used up its deliveries is answered:
// its stored outcome when it has one; outcome_unknown when a worker held
// it or an earlier attempt may have reached iDenfy (it may have been
// processed, and for a send the user may have been texted); else
// upstream_unavailable.
func (w *Worker) strandedOutcome(ctx context.Context, t *task, data []byte, deliveries uint64) *outcome {
	if e := t.decode(data); e != nil {
		return failed(t, attempts{}, e)
	}
	st, err := w.claims.state(ctx, t)
	a := attempts{count: st.Attempts, ambiguous: st.Ambiguous}
	switch {
	case err != nil:
		// The advisory comes once: the job is answered now, with what
		// cannot be ruled out.
		t.logger().Warn().Err(err).Msg("reading the idempotency key of a stranded job failed")
		a.ambiguous = true
	case st.State == stateDone:
		if o, err := decodeOutcome(t.op, st.Result); err == nil {
			return o
		}
		a.ambiguous = true // a result was stored, but cannot be read
	case st.State == stateClaimed:
		a.ambiguous = true
	}
	if !a.ambiguous {
		return failed(t, a, messages.NewError(messages.CodeUpstreamUnavailable,
			fmt.Sprintf("the job used up its %d deliveries without an answer", deliveries)))
	}
	o := failed(t, a, messages.NewError(messages.CodeOutcomeUnknown,
		fmt.Sprintf("the job used up its %d deliveries and iDenfy may have been called; nothing is known of the answer", deliveries)))
	if t.op == opSend {
		o.send.PossibleDuplicate = true
		o.send.Error.Retryable = true // a new send is the way forward
	}
	return o
}
