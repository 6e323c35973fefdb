package worker

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

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

// route is where one operation comes in, on either intake, and where its
// results go: the one map from operations to subjects.
type route struct {
	endpoint string // micro endpoint name
	request  string // request/reply subject
	job      string // job subject
	results  string // results subject
}

// routes are the routes of both operations, indexed by operation.
type routes [2]route

func newRoutes(s messages.Subjects) routes {
	return routes{
		opSend:   {endpoint: "send", request: s.Send, job: s.JobsSend, results: s.ResultsSend},
		opVerify: {endpoint: "verify", request: s.Verify, job: s.JobsVerify, results: s.ResultsVerify},
	}
}

// jobOp returns the operation of a job subject.
func (r *routes) jobOp(subject string) (operation, bool) {
	for op, rt := range r {
		if rt.job == subject {
			return operation(op), true
		}
	}
	return 0, false
}

// resultsOp returns the operation of a results subject.
func (r *routes) resultsOp(subject string) (operation, bool) {
	for op, rt := range r {
		if rt.results == subject {
			return operation(op), true
		}
	}
	return 0, false
}

// endpointOp returns the operation of a micro endpoint.
func (r *routes) endpointOp(name string) operation {
	if name == r[opVerify].endpoint {
		return opVerify
	}
	return opSend
}

// requestKey is the idempotency key of a request/reply request: its
// Nats-Msg-Id, empty without one.
func requestKey(h nats.Header) string {
	if id := h.Get(messages.HeaderMsgID); id != "" {
		return "id:" + id
	}
	return ""
}

// jobKey is the idempotency key of a job: its Nats-Msg-Id, the same key as
// on the request intake, or without one its place in one life of one stream
// (a stream made again starts over at 1).
func jobKey(h nats.Header, stream string, created time.Time, seq uint64) string {
	if key := requestKey(h); key != "" {
		return key
	}
	return "seq:" + stream + ":" + strconv.FormatInt(created.UnixNano(), 10) + ":" + strconv.FormatUint(seq, 10)
}

// replyTo returns a job's Reply-To when the worker may publish there, and
// the refused value otherwise.
func replyTo(h nats.Header) (subject, refused string) {
	v := h.Get(messages.HeaderReplyTo)
	if v == "" || validSubject(v) {
		return v, ""
	}
	return "", v
}

// validSubject reports whether a job's Reply-To may be published to:
// dot-separated non-empty tokens, no wildcards, no whitespace, and not a
// system subject ($KV, $JS, $SYS...): a job must not make the worker write
// with its own permissions where its publisher could not.
func validSubject(s string) bool {
	if s == "" || len(s) > 1024 || s[0] == '$' {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for _, r := range tok {
			if r <= ' ' || r == 0x7f {
				return false
			}
		}
	}
	return true
}

// task is one decoded request on its way through the worker, whichever
// intake it came from. Every stage after the intake sees only this.
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
	slot *slot           // its place in the worker
	log  *zerolog.Logger // made on first use: most requests log nothing
}

// decode fills t from a payload, or returns the contract error for it.
func (t *task) decode(data []byte) *messages.Error {
	var err error
	if t.op == opVerify {
		t.verify, err = messages.DecodeVerifyRequest(data)
	} else {
		t.send, err = messages.DecodeSendRequest(data)
	}
	var e *messages.Error
	if errors.As(err, &e) {
		if e.Code == messages.CodeInvalidRequestID {
			// A refused request_id is not echoed: it may be long or hold
			// control characters.
			t.verify.RequestID = ""
		}
		return e
	}
	if err != nil {
		return messages.NewError(messages.CodeInvalidRequest, err.Error())
	}
	return nil
}

// logger returns the task's logger: every line it writes carries the
// operation, the intake and the caller's identifiers, never the code or the
// full number. It is not safe for concurrent use: goroutines a task starts
// get a copy.
func (t *task) logger() *zerolog.Logger {
	if t.log == nil {
		t.log = t.newLogger()
	}
	return t.log
}

// newLogger builds the task's logger afresh from fields that no longer
// change once the task runs, so other goroutines (the lease keeper) may call
// it.
func (t *task) newLogger() *zerolog.Logger {
	c := t.w.log.With().Str("op", t.op.String()).Str("intake", t.intake)
	if id := t.correlationID(); id != "" {
		c = c.Str("correlation_id", id)
	}
	if t.op == opSend && t.send.PhoneNumber != "" {
		c = c.Str("phone", messages.MaskPhone(t.send.PhoneNumber))
	}
	if t.op == opVerify && t.verify.RequestID != "" {
		c = c.Str("request_id", t.verify.RequestID)
	}
	if t.key != "" && t.w.hash != nil {
		c = c.Str("key", t.w.hash.sum("log", t.key)[:12])
	}
	l := c.Logger()
	return &l
}

func (t *task) correlationID() string {
	if t.op == opVerify {
		return t.verify.CorrelationID
	}
	return t.send.CorrelationID
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
	// record, when not nil, stores a job's outcome under the task's key and
	// releases its claim: left to the jobs intake, which does it while the
	// result event is on its way, and acks or hands the job back only after
	// both (see recordNow).
	record func()
}

// recordNow stores the outcome under its key if that was left to the
// intake, once.
func (o *outcome) recordNow() {
	if r := o.record; r != nil {
		o.record = nil
		r()
	}
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

// failed returns the failed outcome of t with e. A send keeps the code of
// its cause; possible_duplicate says when an attempt may have reached
// iDenfy.
func failed(t *task, a attempts, e *messages.Error) *outcome {
	o := &outcome{op: t.op, a: a}
	if t.op == opVerify {
		o.verify = messages.FailedVerify(t.verify.RequestID, t.verify.CorrelationID, a.count, e)
	} else {
		o.send = messages.FailedSend(t.send.CorrelationID, a.count, e)
		// The user may hold an SMS this failure does not account for.
		o.send.PossibleDuplicate = a.ambiguous
	}
	return o
}

// shuttingDown is the outcome of a task the worker stops before it ends: a
// request is told so, a job goes back to the stream for another worker.
func shuttingDown(t *task, a attempts) *outcome {
	o := failed(t, a, messages.NewError(messages.CodeShuttingDown, "the worker is shutting down; ask again"))
	o.handBack = t.job != nil
	return o
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
