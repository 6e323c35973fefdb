package worker

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
)

// metrics are the worker's Prometheus metrics. Label values come from small
// fixed sets (operations, intakes, statuses, codes, HTTP statuses), never
// from request content.
type metrics struct {
	outcomes        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	upstream        *prometheus.HistogramVec
	retries         *prometheus.CounterVec
	poolWaits       prometheus.Counter
	dedupHits       *prometheus.CounterVec
	memoryHits      prometheus.Counter
	guard           *prometheus.CounterVec
	handBacks       *prometheus.CounterVec
	panics          *prometheus.CounterVec
	eventsLost      *prometheus.CounterVec
}

func newMetrics(w *Worker, reg prometheus.Registerer) *metrics {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_outcomes_total",
			Help: "Requests answered, by operation, intake, status and error code (empty on success).",
		}, []string{"operation", "intake", "status", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "idenfy_worker_request_duration_seconds",
			Help:    "Time from a request's arrival to its answer, retries and waits included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 40},
		}, []string{"operation", "intake"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "idenfy_worker_upstream_request_duration_seconds",
			Help:    "One HTTP attempt to iDenfy, by operation and HTTP status (\"error\" when no answer was read).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"operation", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_upstream_retries_total",
			Help: "Attempts to iDenfy that were retried after a retryable failure.",
		}, []string{"operation"}),
		poolWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idenfy_worker_pool_saturated_total",
			Help: "Times a request waited to be admitted, or for a free place among the calls to iDenfy in flight.",
		}),
		dedupHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_dedup_hits_total",
			Help: "Requests answered from a stored outcome of the same idempotency key, without calling iDenfy.",
		}, []string{"intake"}),
		memoryHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idenfy_worker_verify_memory_hits_total",
			Help: "Verifies answered verified from the memory of an earlier success, without calling iDenfy.",
		}),
		guard: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_guard_rejections_total",
			Help: "Sends refused by the anti-pumping guard, by reason (country, send_limit).",
		}, []string{"reason"}),
		handBacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_jobs_handed_back_total",
			Help: "Jobs returned to the stream to be delivered again (retry later, key busy, shutdown).",
		}, []string{"operation"}),
		eventsLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_result_events_failed_total",
			Help: "Result events the results stream did not store within its budget: a job is handed back to publish it again, a request's event is lost to the stream (its caller was answered).",
		}, []string{"operation"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idenfy_worker_panics_total",
			Help: "Requests whose handling panicked; each was answered outcome_unknown and the worker went on.",
		}, []string{"operation"}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.outcomes, m.requestDuration, m.upstream, m.retries, m.poolWaits,
		m.dedupHits, m.memoryHits, m.guard, m.handBacks, m.panics, m.eventsLost,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "idenfy_worker_in_flight",
			Help: "Requests in this process, both intakes, from admission to answer.",
		}, func() float64 { return float64(w.admission.tasks.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "idenfy_worker_upstream_in_flight",
			Help: "HTTP calls to iDenfy in flight; at most idenfy_worker_concurrency_limit.",
		}, func() float64 { return float64(w.admission.callsInFlight()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "idenfy_worker_concurrency_limit",
			Help: "The bound on HTTP calls to iDenfy in flight (WORKER_CONCURRENCY).",
		}, func() float64 { return float64(w.cfg.Concurrency) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "idenfy_worker_nats_connected",
			Help: "1 when the NATS connection is up, else 0.",
		}, func() float64 {
			if w.nc.IsConnected() {
				return 1
			}
			return 0
		}),
		&pendingCollector{w: w, desc: prometheus.NewDesc("idenfy_worker_jobs_pending",
			"Jobs in the stream not yet delivered to any worker, as the consumer reports them.", nil, nil)},
		&pendingCollector{w: w, ackPending: true, desc: prometheus.NewDesc("idenfy_worker_jobs_ack_pending",
			"Jobs delivered to workers and not yet acked, as the consumer reports them.", nil, nil)},
	)
	return m
}

func (m *metrics) outcome(t *task, o *outcome, elapsed time.Duration) {
	code := ""
	if e := o.err(); e != nil {
		code = string(e.Code)
	}
	m.outcomes.WithLabelValues(t.op.String(), t.intake, string(o.status()), code).Inc()
	m.requestDuration.WithLabelValues(t.op.String(), t.intake).Observe(elapsed.Seconds())
}

func (m *metrics) upstreamCall(op operation, err error, d time.Duration) {
	m.upstream.WithLabelValues(op.String(), statusLabel(err)).Observe(d.Seconds())
}

func statusLabel(err error) string {
	if err == nil {
		return "200"
	}
	var ae *idenfy.APIError
	if errors.As(err, &ae) {
		return strconv.Itoa(ae.Status)
	}
	var re *idenfy.ResponseError
	if errors.As(err, &re) {
		return strconv.Itoa(re.Status)
	}
	return "error"
}

func (m *metrics) retried(op operation)        { m.retries.WithLabelValues(op.String()).Inc() }
func (m *metrics) poolFull()                   { m.poolWaits.Inc() }
func (m *metrics) dedupHit(intake string)      { m.dedupHits.WithLabelValues(intake).Inc() }
func (m *metrics) memoryHit()                  { m.memoryHits.Inc() }
func (m *metrics) guardRejected(reason string) { m.guard.WithLabelValues(reason).Inc() }
func (m *metrics) handedBack(op operation)     { m.handBacks.WithLabelValues(op.String()).Inc() }
func (m *metrics) panicked(op operation)       { m.panics.WithLabelValues(op.String()).Inc() }
func (m *metrics) eventLost(op operation)      { m.eventsLost.WithLabelValues(op.String()).Inc() }

// pendingCollector asks the consumer for its counts at scrape time.
type pendingCollector struct {
	w          *Worker
	desc       *prometheus.Desc
	ackPending bool
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	c.w.mu.Lock()
	j := c.w.jobs
	c.w.mu.Unlock()
	if j == nil {
		return
	}
	j.mu.Lock()
	cons := j.cons
	j.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	v := float64(info.NumPending)
	if c.ackPending {
		v = float64(info.NumAckPending)
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v)
}
