package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// handle is the handler core: job age, guard, verify memory, the iDenfy
// call under the backoff policy, and the contract result. prior carries
// what earlier deliveries of the same idempotency key left behind.
func (w *Worker) handle(soft, hard context.Context, t *task, prior keyRecord) *outcome {
	a := attempts{count: prior.Attempts, ambiguous: prior.Ambiguous}
	if t.job != nil {
		if age := w.clock.Now().Sub(t.job.published); age > w.cfg.JobMaxAge {
			o := failed(t, a, messages.NewError(messages.CodeExpired, fmt.Sprintf(
				"the job waited %s, longer than the job max age of %s", age.Round(time.Second), w.cfg.JobMaxAge)))
			o.counted = prior.Counted // an earlier delivery's place is given back
			return o
		}
	}
	if t.op == opVerify {
		return w.handleVerify(soft, hard, t, a)
	}
	return w.handleSend(soft, hard, t, a, prior.Counted)
}

func (w *Worker) handleSend(soft, hard context.Context, t *task, a attempts, counted bool) *outcome {
	req := t.send
	if e := w.guard.check(req.PhoneNumber); e != nil {
		return failed(t, a, e)
	}
	if !counted {
		ctx, cancel := context.WithTimeout(hard, storeTimeout)
		refusal, err := w.guard.reserve(ctx, req.PhoneNumber)
		cancel()
		if err != nil {
			return storeError(t, a, "counting the send against the number's limits failed", err)
		}
		if refusal != nil {
			return failed(t, a, refusal)
		}
		counted = true
	}

	var resp idenfy.SendSMSResponse
	err := w.retry(soft, hard, t, &a, func(ctx context.Context) error {
		var err error
		resp, err = w.client.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: req.PhoneNumber, SenderName: req.SenderName})
		return err
	})
	if err != nil {
		o := w.failedCall(soft, t, a, err)
		o.counted = counted
		return o
	}
	w.guard.sent(hard, t, resp.RequestID)
	return &outcome{op: opSend, a: a, counted: true, send: messages.SendResult{
		Status:            messages.StatusSent,
		RequestID:         resp.RequestID,
		CorrelationID:     req.CorrelationID,
		Attempts:          a.count,
		PossibleDuplicate: a.ambiguous,
	}}
}

func (w *Worker) handleVerify(soft, hard context.Context, t *task, a attempts) *outcome {
	c, unlock, o := w.claims.claimVerifyTurn(soft, hard, t, a)
	if o != nil {
		return o
	}
	defer unlock()
	// An earlier verify of this request_id that may have been accepted
	// upstream makes any false unreliable, for this verify too.
	a.ambiguous = a.ambiguous || c.rec.Ambiguous

	stop := w.claims.keep(c, t.newLogger, nil)
	defer stop()
	o = w.askVerify(soft, hard, t, a)
	w.claims.rememberVerify(t, c, o)
	return o
}

// askVerify asks iDenfy, under the backoff policy, with the verify turn of
// the request_id held.
func (w *Worker) askVerify(soft, hard context.Context, t *task, a attempts) *outcome {
	req := t.verify
	var resp idenfy.VerifySMSResponse
	err := w.retry(soft, hard, t, &a, func(ctx context.Context) error {
		var err error
		resp, err = w.client.VerifySMS(ctx, idenfy.VerifySMSRequest{RequestID: req.RequestID, ReceivedCode: req.ReceivedCode})
		return err
	})
	switch {
	case err != nil:
		return w.failedCall(soft, t, a, err)
	case resp.IsVerified:
		w.guard.verified(hard, t, req.RequestID)
		return &outcome{op: opVerify, a: a, verify: verifiedResult(req, a.count)}
	case a.ambiguous:
		// An earlier attempt may have been the one that consumed the code:
		// iDenfy's false cannot be trusted.
		return failed(t, a, messages.NewError(messages.CodeOutcomeUnknown,
			"iDenfy answered false, but an earlier attempt may have been accepted and its answer lost; send a new code"))
	}
	return &outcome{op: opVerify, a: a, verify: rejectedResult(req, a.count)}
}

func rejectedResult(req messages.VerifyRequest, attempts int) messages.VerifyResult {
	return messages.VerifyResult{
		Status:        messages.StatusRejected,
		RequestID:     req.RequestID,
		CorrelationID: req.CorrelationID,
		Attempts:      attempts,
	}
}

func verifiedResult(req messages.VerifyRequest, attempts int) messages.VerifyResult {
	return messages.VerifyResult{
		Status:        messages.StatusVerified,
		IsVerified:    true,
		RequestID:     req.RequestID,
		CorrelationID: req.CorrelationID,
		Attempts:      attempts,
	}
}

// failedCall turns the last error of a failed call into an outcome. A
// verify whose attempt may have been accepted upstream cannot be trusted:
// outcome_unknown. A send that never got an answer has none to distrust:
// it keeps the code of its cause, with possible_duplicate (see failed).
func (w *Worker) failedCall(soft context.Context, t *task, a attempts, err error) *outcome {
	e := contractError(err, &a)
	permanent := e.Code == messages.CodeUnauthorized || e.Code == messages.CodeQuotaExhausted
	switch {
	case permanent:
		t.logger().Error().Str("code", string(e.Code)).Msg("iDenfy refused the account: " + e.Message)
		if a.ambiguous && t.op == opSend {
			e.Message += "; an earlier attempt may have reached iDenfy, so the user may have been texted"
		}
	case soft.Err() != nil && w.stopping() && (t.job != nil || !a.ambiguous):
		// A job goes back to the stream, its next delivery inheriting what
		// this one learned; a request whose attempt may have reached iDenfy
		// is told so below, not to ask again.
		return shuttingDown(t, a)
	case a.ambiguous && t.op == opSend:
		// The cause stays the answer (an outage is an outage); the result
		// says possible_duplicate, and asking again texts a new code.
		e.Message += "; an attempt may have reached iDenfy, so the user may have been texted"
	case a.ambiguous:
		e = messages.NewError(messages.CodeOutcomeUnknown,
			"an attempt may have been accepted by iDenfy and its answer lost ("+e.Message+"); send a new code")
	case errors.Is(err, context.Canceled):
		e = messages.NewError(messages.CodeShuttingDown, "the request was cancelled")
	}
	return failed(t, a, e)
}
