package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The fleet scenarios measure the workers of one deployment as one client
// of iDenfy (README "One fleet toward iDenfy") from iDenfy's side: the
// simulator is served through a front that notes when each vendor call
// arrives.

// callTimes notes the arrival of every vendor call.
type callTimes struct {
	mu sync.Mutex
	at []time.Time
}

func (c *callTimes) front(sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_sim/") {
			now := time.Now()
			c.mu.Lock()
			c.at = append(c.at, now)
			c.mu.Unlock()
		}
		sim.ServeHTTP(w, r)
	})
}

func (c *callTimes) sorted() []time.Time {
	c.mu.Lock()
	at := slices.Clone(c.at)
	c.mu.Unlock()
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	return at
}

// between counts the calls that arrived in [from, to).
func (c *callTimes) between(from, to time.Time) int {
	n := 0
	for _, t := range c.sorted() {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// fleetLimitReport is what fleet-limit measured.
type fleetLimitReport struct {
	Machine     string  `json:"machine"`
	Workers     int     `json:"workers"`
	Limit       string  `json:"limit"`
	LimitPerSec float64 `json:"limit_per_second"`
	Jobs        int     `json:"jobs"`
	Completed   int64   `json:"completed"`
	Failed      int64   `json:"failed"`
	Calls       int     `json:"upstream_calls"`
	Seconds     float64 `json:"seconds"` // from the first call to the last
	PerSecond   float64 `json:"per_second"`
	OfLimit     float64 `json:"of_limit"` // PerSecond / LimitPerSec
	MostIn1s    int     `json:"most_in_1s"`
	// Bound is README's: the limit plus a second's share, in 1s.
	Bound int `json:"bound_in_1s"`
}

// fleetLimit drains a backlog of jobs through -workers worker processes
// under one WORKER_RATE_LIMIT and reports the rate iDenfy saw.
func (b *bench) fleetLimit(ctx context.Context, stdout io.Writer) error {
	o := b.o
	lim, _ := worker.ParseRateLimit(o.limit) // checked by parse
	rate := float64(lim.N) / lim.Per.Seconds()
	rep := fleetLimitReport{Machine: machine(), Workers: o.workers, Limit: o.limit, LimitPerSec: rate, Jobs: o.jobs}
	calls := &callTimes{}
	e, err := newEnvWith(o.latency, calls.front)
	if err != nil {
		return err
	}
	defer e.close()
	setup, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := e.createJobs(setup, max(1000, 10*o.concurrency)); err != nil {
		return err
	}
	if err := publishBacklog(setup, e, o.jobs, b.stderr); err != nil {
		return err
	}
	counter, sub, err := countResults(e.nc, e.subj.ResultsSend, o.jobs)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for i := range o.workers {
		p, err := b.startProgram(progWorker, e, o.concurrency, "WORKER_RATE_LIMIT="+o.limit)
		if err != nil {
			return err
		}
		p.name = fmt.Sprintf("worker %d", i+1)
		defer p.stop()
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go progress(pctx, b.stderr, "fleet", counter.n.Load)
	// The backlog takes jobs/rate; allow it four times that and a minute.
	wait := time.Duration(4*float64(o.jobs)/rate*float64(time.Second)) + time.Minute
	select {
	case <-counter.done:
	case <-time.After(wait):
		return fmt.Errorf("%d of %d results after %s", counter.n.Load(), o.jobs, wait)
	case <-ctx.Done():
		return ctx.Err()
	}
	stop()
	at := calls.sorted()
	rep.Completed, rep.Failed, rep.Calls = counter.n.Load(), counter.failed.Load(), len(at)
	if len(at) > 1 {
		span := at[len(at)-1].Sub(at[0])
		rep.Seconds = span.Seconds()
		rep.PerSecond = float64(len(at)-1) / span.Seconds()
		rep.OfLimit = rep.PerSecond / rate
	}
	rep.MostIn1s = idenfytest.MostInWindow(at, time.Second)
	rep.Bound = int(2 * max(1, rate))
	if o.jsonOut {
		return encodeJSON(stdout, rep)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", rep.Machine)
	fmt.Fprintf(tw, "fleet-limit\t%d workers, WORKER_RATE_LIMIT=%s (%.1f/s), backlog of %d jobs, simulator %v\n", rep.Workers, rep.Limit, rate, rep.Jobs, o.latency)
	fmt.Fprintf(tw, "results\t%d (%d failed)\n", rep.Completed, rep.Failed)
	fmt.Fprintf(tw, "calls iDenfy received\t%d over %.1fs\n", rep.Calls, rep.Seconds)
	fmt.Fprintf(tw, "achieved rate\t%.1f/s = %.3f of the limit\n", rep.PerSecond, rep.OfLimit)
	fmt.Fprintf(tw, "most calls in any 1s\t%d (bound: the limit plus a second's share, %d)\n", rep.MostIn1s, rep.Bound)
	return tw.Flush()
}

// fleetOutageRun is one run of fleet-outage: one breaker setting.
type fleetOutageRun struct {
	Breaker string `json:"breaker"`
	// Calls iDenfy received during the outage, and per second of it.
	OutageCalls   int     `json:"outage_calls"`
	OutageCallsPS float64 `json:"outage_calls_per_second"`
	// The requests sent during the outage: how many, how many were
	// answered sent (they waited it out), and the median and p90 time to
	// their answer.
	OutageRequests int     `json:"outage_requests"`
	OutageSent     int     `json:"outage_sent"`
	OutageP50Ms    float64 `json:"outage_p50_ms"`
	OutageP90Ms    float64 `json:"outage_p90_ms"`
	// RecoveryMs is from the end of the outage to the first request
	// answered sent that was sent after it.
	RecoveryMs float64 `json:"recovery_ms"`
	Requests   int     `json:"requests"`
}

type fleetOutageReport struct {
	Machine string           `json:"machine"`
	Workers int              `json:"workers"`
	Rate    int              `json:"rate"`
	Outage  string           `json:"outage"`
	Runs    []fleetOutageRun `json:"runs"`
}

// fleetOutage runs a steady request load through -workers workers while
// the simulator answers 503 for -outage, once with the breaker off and
// once with its default, each in an env of its own.
func (b *bench) fleetOutage(ctx context.Context, stdout io.Writer) error {
	o := b.o
	rep := fleetOutageReport{Machine: machine(), Workers: o.workers, Rate: o.rate, Outage: o.outage.String()}
	for _, setting := range []string{"off", worker.DefaultBreaker.String()} {
		run, err := b.outageRun(ctx, setting)
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, run)
	}
	if o.jsonOut {
		return encodeJSON(stdout, rep)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", rep.Machine)
	fmt.Fprintf(tw, "fleet-outage\t%d workers, %d requests/s, iDenfy answering 503 for %s, simulator %v\n", rep.Workers, rep.Rate, rep.Outage, o.latency)
	fmt.Fprintln(tw, "WORKER_BREAKER\tcalls during outage\tper s\trequests during outage\tanswered sent\tp50 ms\tp90 ms\trecovery ms")
	for _, r := range rep.Runs {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%d\t%d\t%.0f\t%.0f\t%.0f\n", r.Breaker, r.OutageCalls, r.OutageCallsPS,
			r.OutageRequests, r.OutageSent, r.OutageP50Ms, r.OutageP90Ms, r.RecoveryMs)
	}
	return tw.Flush()
}

func (b *bench) outageRun(ctx context.Context, breaker string) (fleetOutageRun, error) {
	o := b.o
	run := fleetOutageRun{Breaker: breaker}
	calls := &callTimes{}
	e, err := newEnvWith(o.latency, calls.front)
	if err != nil {
		return run, err
	}
	defer e.close()
	for i := range o.workers {
		p, err := b.startProgram(progWorker, e, o.concurrency, "WORKER_BREAKER="+breaker)
		if err != nil {
			return run, err
		}
		p.name = fmt.Sprintf("worker %d", i+1)
		defer p.stop()
	}
	conns, err := connections(e.natsURL, 4)
	if err != nil {
		return run, err
	}
	defer closeAll(conns)

	type answer struct {
		sent    time.Time
		ok      bool
		latency time.Duration
	}
	var (
		mu      sync.Mutex
		answers []answer
		gen     numbers
		n       int
	)
	call := func() (bool, time.Duration) {
		mu.Lock()
		nc := conns[n%len(conns)]
		n++
		mu.Unlock()
		sent := time.Now()
		ok, d := request(ctx, nc, e.subj.Send, gen.next())
		mu.Lock()
		answers = append(answers, answer{sent, ok, d})
		mu.Unlock()
		return ok, d
	}
	// The outage begins after -warmup of load and lasts -outage; the load
	// goes on for -duration after it.
	// The outage's lines and the load's progress share stderr.
	stderr := &lockedWriter{w: b.stderr}
	var from, to time.Time
	outage := make(chan struct{})
	go func() {
		defer close(outage)
		select {
		case <-time.After(o.warmup):
		case <-ctx.Done():
			return
		}
		from = time.Now()
		if err := e.sim.InjectFault(idenfytest.Fault{Status: http.StatusServiceUnavailable, Count: 1 << 30}); err != nil {
			fmt.Fprintln(stderr, "  starting the outage:", err)
		}
		fmt.Fprintf(stderr, "  outage begins (WORKER_BREAKER=%s)\n", breaker)
		select {
		case <-time.After(o.outage):
		case <-ctx.Done():
		}
		// ClearFaults ends the latency too: set it again.
		e.sim.ClearFaults()
		if o.latency > 0 {
			_ = e.sim.InjectFault(idenfytest.Fault{Latency: o.latency.String()})
		}
		to = time.Now()
		fmt.Fprintln(stderr, "  outage ends")
	}()
	openLoop(ctx, o.rate, o.warmup+o.outage+o.duration, stderr, "requests, WORKER_BREAKER="+breaker, call)
	<-outage
	if ctx.Err() != nil {
		return run, ctx.Err()
	}
	run.Requests = len(answers)
	run.OutageCalls = calls.between(from, to)
	run.OutageCallsPS = float64(run.OutageCalls) / to.Sub(from).Seconds()
	var during []time.Duration
	recovered := time.Time{}
	for _, a := range answers {
		switch {
		case !a.sent.Before(from) && a.sent.Before(to):
			during = append(during, a.latency)
			if a.ok {
				run.OutageSent++
			}
		case !a.sent.Before(to) && a.ok && (recovered.IsZero() || a.sent.Add(a.latency).Before(recovered)):
			recovered = a.sent.Add(a.latency)
		}
	}
	run.OutageRequests = len(during)
	slices.Sort(during)
	if len(during) > 0 {
		run.OutageP50Ms = ms(during[len(during)/2])
		run.OutageP90Ms = ms(during[min(len(during)-1, len(during)*9/10)])
	}
	if !recovered.IsZero() {
		run.RecoveryMs = ms(recovered.Sub(to))
	}
	return run, nil
}

// lockedWriter serializes the writes of several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
