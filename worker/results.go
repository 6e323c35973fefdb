package worker

import (
	"time"

	"github.com/rs/zerolog"
)

// What both intakes do once a task has its outcome: publish the result
// event, count it, and log the one line each request gets.

// publishResult publishes a result on the results subject of its
// operation, and on replyTo when set.
func (w *Worker) publishResult(t *task, body []byte, replyTo string) {
	subject := w.routes[t.op].results
	if err := w.nc.Publish(subject, body); err != nil {
		t.logger().Warn().Err(err).Str("subject", subject).Msg("publishing the result failed")
	}
	if replyTo != "" {
		if err := w.nc.Publish(replyTo, body); err != nil {
			t.logger().Warn().Err(err).Str("subject", replyTo).Msg("publishing the result to Reply-To failed")
		}
	}
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
