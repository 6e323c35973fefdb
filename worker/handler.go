package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// operation is what a request asks for.
type operation uint8

const (
	opSend operation = iota
	opVerify
)

func (o operation) String() string {
	if o == opVerify {
		return "verify"
	}
	return "send"
}

// Intake names, as logged and measured.
const (
	intakeRequest = "request"
	intakeJob     = "job"
)

// task is one decoded request on its way through the worker, whichever
// intake it came from. The handler core (handle) sees only this.
type task struct {
	op     operation
	intake string
	send   messages.SendRequest
	verify messages.VerifyRequest
	// key is the idempotency key (Nats-Msg-Id, or a job's stream
	// sequence); empty when the request has none.
	key string
	// job is set for the jobs intake.
	job *jobDelivery

	w    *Worker
	slot *slot           // its place in the pool
	log  *zerolog.Logger // made on first use: most requests log nothing
}

// logger returns the task's logger. It is not safe for concurrent use:
// goroutines a task starts get a copy.
func (t *task) logger() *zerolog.Logger {
	if t.log == nil {
		l := t.w.taskLogger(t)
		t.log = &l
	}
	return t.log
}

func (t *task) correlationID() string {
	if t.op == opVerify {
		return t.verify.CorrelationID
	}
	return t.send.CorrelationID
}

// fingerprint identifies the request behind an idempotency key, so that a
// key reused for another request is refused instead of answered with the
// outcome of the first one.
func (t *task) fingerprint(s *store) string {
	if t.op == opVerify {
		return s.hash("fingerprint", "verify\x00"+t.verify.RequestID+"\x00"+t.verify.ReceivedCode)
	}
	return s.hash("fingerprint", "send\x00"+t.send.PhoneNumber+"\x00"+t.send.SenderName)
}

// outcome is the answer to a task, or the decision to hand it back.
type outcome struct {
	op     operation
	send   messages.SendResult
	verify messages.VerifyResult
	a      attempts
	// counted is set once the send counted against the number's limits.
	counted bool
	// stored is set when the outcome was read from the idempotency store
	// instead of being worked out.
	stored bool
	// handBack asks the jobs intake to return the job to the stream, to be
	// delivered again after delay, instead of answering it.
	handBack bool
	delay    time.Duration
}

func (o *outcome) status() messages.Status {
	if o.op == opVerify {
		return o.verify.Status
	}
	return o.send.Status
}

func (o *outcome) err() *messages.Error {
	if o.op == opVerify {
		return o.verify.Error
	}
	return o.send.Error
}

// attempts is the result's count of upstream calls.
func (o *outcome) attempts() int {
	if o.op == opVerify {
		return o.verify.Attempts
	}
	return o.send.Attempts
}

func (o *outcome) encode() []byte {
	var v any = o.send
	if o.op == opVerify {
		v = o.verify
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic("worker: encoding a result: " + err.Error()) // the result types always encode
	}
	return b
}

// decodeOutcome reads a stored result back.
func decodeOutcome(op operation, data []byte) (*outcome, error) {
	o := &outcome{op: op, stored: true}
	var err error
	if op == opVerify {
		err = json.Unmarshal(data, &o.verify)
	} else {
		err = json.Unmarshal(data, &o.send)
	}
	return o, err
}

// failed returns the failed outcome of t with e.
func failed(t *task, a attempts, e *messages.Error) *outcome {
	o := &outcome{op: t.op, a: a}
	if t.op == opVerify {
		o.verify = messages.FailedVerify(t.verify.RequestID, t.verify.CorrelationID, a.count, e)
	} else {
		o.send = messages.FailedSend(t.send.CorrelationID, a.count, e)
	}
	return o
}

func shuttingDown(t *task, a attempts) *outcome {
	return failed(t, a, messages.NewError(messages.CodeShuttingDown, "the worker is shutting down; ask again"))
}

// storeError is the outcome of a task whose JetStream KV store is away: a
// request is told so (retryable), a job goes back to the stream.
func storeError(t *task, a attempts, what string, err error) *outcome {
	t.logger().Error().Err(err).Msg(what)
	e := messages.NewError(messages.CodeUpstreamUnavailable, "the worker's state store (NATS JetStream) is unavailable: "+what)
	o := failed(t, a, e)
	if t.job != nil {
		// Back to the stream, to return when the store may be back: at
		// once, every delivery would be spent in milliseconds.
		o.handBack, o.delay = true, jobRetryDelay(t.job.retryBase, t.job.delivered)
	}
	return o
}

// handle is the handler core: guard, verify memory, the iDenfy call under
// the backoff policy, and the contract result. prior carries what earlier
// deliveries of the same idempotency key left behind.
func (w *Worker) handle(soft, hard context.Context, t *task, prior record) *outcome {
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
	if e := w.checkCountry(req.PhoneNumber); e != nil {
		w.metrics.guardRejected("country")
		return failed(t, a, e)
	}
	if !counted {
		ctx, cancel := context.WithTimeout(hard, storeTimeout)
		refusal, err := w.reserveSend(ctx, req.PhoneNumber)
		cancel()
		if err != nil {
			return storeError(t, a, "counting the send against the number's limits failed", err)
		}
		if refusal != nil {
			w.metrics.guardRejected("send_limit")
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
	return &outcome{op: opSend, a: a, counted: true, send: messages.SendResult{
		Status:            messages.StatusSent,
		RequestID:         resp.RequestID,
		CorrelationID:     req.CorrelationID,
		Attempts:          a.count,
		PossibleDuplicate: a.ambiguous,
	}}
}

func (w *Worker) handleVerify(soft, hard context.Context, t *task, a attempts) *outcome {
	req := t.verify
	key := w.store.verifyKey(req.RequestID)
	code := w.store.codeHash(req.RequestID, req.ReceivedCode)
	release, o := w.holdLocally(soft, t, key)
	if o != nil {
		o.a = a
		return o
	}
	defer release()
	var c *claim
	for c == nil {
		ctx, cancel := context.WithTimeout(hard, storeTimeout)
		acq, err := w.store.acquire(ctx, key, code, false, w.isMine)
		cancel()
		switch {
		case err != nil:
			return storeError(t, a, "reading the verify memory failed", err)
		case acq.done && !acq.mismatch:
			// Verified before with this code: iDenfy would now answer a
			// misleading false ("already validated").
			w.metrics.memoryHit()
			return &outcome{op: opVerify, a: a, verify: verifiedResult(req, a.count)}
		case acq.done:
			// Verified before with another code: this one is wrong, and
			// iDenfy would refuse any code now.
			return &outcome{op: opVerify, a: a, verify: rejectedResult(req, a.count)}
		case acq.claim != nil:
			c = acq.claim
			continue
		}
		// Another verify of this request_id is asking iDenfy: wait for it.
		if o, stop := w.waitBusy(soft, t, acq.busy); stop {
			o.a = a
			return o
		}
	}
	// An earlier verify of this request_id that may have been accepted
	// upstream makes any false unreliable, for this verify too.
	a.ambiguous = a.ambiguous || c.rec.Ambiguous

	stop := w.keepClaim(c, t.logger(), nil)
	o = w.askVerify(soft, hard, t, a)
	stop()

	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	var err error
	memo := attempts{ambiguous: o.a.ambiguous}
	if o.verify.Status == messages.StatusVerified {
		err = w.store.finish(ctx, c, &memo, false, nil)
	} else {
		err = w.store.release(ctx, c, &memo, false)
	}
	if err != nil {
		t.logger().Warn().Err(err).Msg("recording the verify memory failed")
	}
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

// failedCall turns the last error of a failed call into an outcome.
func (w *Worker) failedCall(soft context.Context, t *task, a attempts, err error) *outcome {
	e := contractError(err, &a)
	permanent := e.Code == messages.CodeUnauthorized || e.Code == messages.CodeQuotaExhausted
	switch {
	case permanent:
		t.logger().Error().Str("code", string(e.Code)).Msg("iDenfy refused the account: " + e.Message)
		if a.ambiguous && t.op == opSend {
			e.Message += "; an earlier attempt may have reached iDenfy, so the user may have been texted"
		}
	case soft.Err() != nil && w.stopping():
		o := shuttingDown(t, a)
		o.handBack = t.job != nil
		return o
	case a.ambiguous && t.op == opSend:
		e = messages.NewError(messages.CodeOutcomeUnknown,
			"iDenfy may have texted the user, but its answer was lost ("+e.Message+"); a new send texts again")
		// Asking again does help a send: it texts a new code.
		e.Retryable = true
	case a.ambiguous:
		e = messages.NewError(messages.CodeOutcomeUnknown,
			"an attempt may have been accepted by iDenfy and its answer lost ("+e.Message+"); send a new code")
	case errors.Is(err, context.Canceled):
		e = messages.NewError(messages.CodeShuttingDown, "the request was cancelled")
	}
	return failed(t, a, e)
}
