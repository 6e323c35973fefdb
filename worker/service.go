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
	reply := req.Reply()
	if err := t.decode(req.Data()); err != nil {
		o := failed(t, attempts{}, err)
		w.answerRequest(t, o, reply, start)
		return
	}
	if w.stopping() {
		w.answerRequest(t, shuttingDown(t, attempts{}), reply, start)
		return
	}
	if t.slot = w.admission.enter(w.soft.Done()); t.slot == nil {
		o := shuttingDown(t, attempts{})
		w.answerRequest(t, o, reply, start)
		return
	}
	w.stats[op].inFlight.Add(1)
	w.admission.spawn(func() {
		defer t.slot.leave()
		defer w.stats[op].inFlight.Add(-1)
		o := w.run(t)
		w.answerRequest(t, o, reply, start)
	})
}

// answerRequest replies on the request's inbox and publishes the result
// event. A failure carries the micro error headers too.
func (w *Worker) answerRequest(t *task, o *outcome, reply string, start time.Time) {
	body := o.encode()
	if reply != "" {
		msg := &nats.Msg{Subject: reply, Data: body}
		if e := o.err(); e != nil {
			msg.Header = nats.Header{
				micro.ErrorHeader:     []string{string(e.Code) + ": " + e.Message},
				micro.ErrorCodeHeader: []string{strconv.Itoa(serviceErrorCode(e.Code))},
			}
		}
		if err := w.nc.PublishMsg(msg); err != nil {
			t.logger().Warn().Err(err).Msg("replying failed")
		}
	}
	w.publishResult(t, body, "")
	elapsed := time.Since(start)
	w.stats[t.op].record(elapsed, o.err() != nil)
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
	case messages.CodeUnauthorized:
		return 401
	case messages.CodeQuotaExhausted:
		return 402
	case messages.CodeCountryNotAllowed:
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
