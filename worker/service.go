package worker

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// startService registers the request/reply intake: a NATS micro service
// with an endpoint per operation in the shared queue group.
func (w *Worker) startService() error {
	svc, err := micro.AddService(w.nc, micro.Config{
		Name:         messages.ServiceName,
		Version:      Version,
		Description:  "Phone number verification through iDenfy: send a code by SMS, verify the code the user typed",
		QueueGroup:   messages.QueueGroup,
		Metadata:     map[string]string{"worker_id": w.id, "prefix": w.cfg.Prefix},
		StatsHandler: w.endpointStats,
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			w.log.Error().Str("subject", err.Subject).Str("error", err.Description).Msg("micro service error")
		},
	})
	if err != nil {
		return err
	}
	for op, rt := range w.routes {
		op := operation(op)
		handler := micro.HandlerFunc(func(req micro.Request) { w.serveRequest(op, req) })
		if err := svc.AddEndpoint(rt.endpoint, handler, micro.WithEndpointSubject(rt.request)); err != nil {
			_ = svc.Stop()
			return err
		}
	}
	w.svc = svc
	return nil
}

// serveRequest runs in the endpoint's subscription callback, which NATS
// calls one message at a time: it answers bad input at once and hands the
// rest to the pool, so that a slow iDenfy never serialises requests.
func (w *Worker) serveRequest(op operation, req micro.Request) {
	start := time.Now()
	t := &task{op: op, intake: intakeRequest, w: w, key: requestKey(nats.Header(req.Headers()))}
	if err := t.decode(req.Data()); err != nil {
		w.answerRequest(t, failed(t, attempts{}, err), req, "", start)
		return
	}
	if w.stopping() {
		w.answerRequest(t, shuttingDown(t, attempts{}), req, "", start)
		return
	}
	if t.slot = w.admission.enter(w.soft.Done(), intakeRequest); t.slot == nil {
		w.answerRequest(t, shuttingDown(t, attempts{}), req, "", start)
		return
	}
	reply := req.Reply()
	w.stats[op].inFlight.Add(1)
	w.admission.spawn(func() {
		defer t.slot.leave()
		defer w.stats[op].inFlight.Add(-1)
		o := w.run(t)
		w.answerRequest(t, o, nil, reply, start)
	})
}

// answerRequest replies on the request's inbox, then publishes the result
// event: the caller does not wait for the results stream. A failure carries
// the micro error headers too. In micro's callback (req set) it answers
// through req, so that `nats micro stats` counts a failure in num_errors
// and last_error; from the pool it publishes on the inbox (reply) itself,
// since micro only counts what its callback answered before returning, and
// the callback must not wait for iDenfy. The stats' data block counts every
// request from arrival to answer.
func (w *Worker) answerRequest(t *task, o *outcome, req micro.Request, reply string, start time.Time) {
	body := o.encode()
	e := o.err()
	var err error
	switch {
	case req != nil && e != nil:
		err = req.Error(strconv.Itoa(serviceErrorCode(e.Code)), string(e.Code)+": "+e.Message, body)
	case req != nil:
		err = req.Respond(body)
	case reply != "":
		msg := &nats.Msg{Subject: reply, Data: body}
		if e != nil {
			msg.Header = nats.Header{
				micro.ErrorHeader:     []string{string(e.Code) + ": " + e.Message},
				micro.ErrorCodeHeader: []string{strconv.Itoa(serviceErrorCode(e.Code))},
			}
		}
		err = w.nc.PublishMsg(msg)
	}
	if err != nil {
		t.logger().Warn().Err(err).Msg("replying failed")
	}
	w.publishAnswered(t, body)
	elapsed := time.Since(start)
	w.stats[t.op].record(elapsed, e != nil)
	w.observe(t, o, elapsed)
}

// serviceErrorCode gives a micro error answer the HTTP-like status that
// NATS micro tooling expects in Nats-Service-Error-Code; the contract's own
// code is in Nats-Service-Error and in the JSON body.
func serviceErrorCode(c messages.Code) int {
	switch c {
	case messages.CodeInvalidRequest, messages.CodeInvalidPhoneNumber, messages.CodeInvalidSenderName,
		messages.CodeInvalidRequestID, messages.CodeInvalidCode:
		return 400
	case messages.CodeUnauthorized, messages.CodeQuotaExhausted:
		// The worker's own iDenfy account is at fault, not the caller:
		// the contract code in the body says which.
		return 500
	case messages.CodeCountryNotAllowed, messages.CodeNumberNotAllowed, messages.CodeSuspectedFraud:
		return 403
	case messages.CodeExpired:
		return 410
	case messages.CodeRateLimited, messages.CodeTooManySends:
		return 429
	case messages.CodeUpstreamRejected, messages.CodeOutcomeUnknown:
		return 502
	case messages.CodeShuttingDown:
		return 503
	}
	return 503
}

// endpointStats is what each endpoint adds to `nats micro stats`: micro's
// own processing time only measures handing a request to the pool, so these
// count the requests from arrival to answer.
type endpointStats struct {
	inFlight  atomic.Int64
	completed atomic.Int64
	failed    atomic.Int64
	totalNs   atomic.Int64
}

func (s *endpointStats) record(elapsed time.Duration, failed bool) {
	s.completed.Add(1)
	s.totalNs.Add(int64(elapsed))
	if failed {
		s.failed.Add(1)
	}
}

// endpointStatsData is the JSON of an endpoint's stats data.
type endpointStatsData struct {
	InFlight              int64         `json:"in_flight"`
	Completed             int64         `json:"completed"`
	Failed                int64         `json:"failed"`
	AverageProcessingTime time.Duration `json:"average_processing_time"`
}

func (w *Worker) endpointStats(e *micro.Endpoint) any {
	s := &w.stats[w.routes.endpointOp(e.Name)]
	d := endpointStatsData{InFlight: s.inFlight.Load(), Completed: s.completed.Load(), Failed: s.failed.Load()}
	if d.Completed > 0 {
		d.AverageProcessingTime = time.Duration(s.totalNs.Load() / d.Completed)
	}
	return d
}
