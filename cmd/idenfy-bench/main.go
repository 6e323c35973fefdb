// The idenfy-bench command is the load tool of idenfy-worker. It starts a
// NATS server and the iDenfy simulator in its own process, runs the worker
// (the production binary, built from ./cmd/idenfy-worker) in another, drives
// it through either intake, and measures the same load against a baseline
// with no policy at all (a minimal micro responder, a minimal jobs loop) in
// the same run, so that the worker's figures read as ratios on a noisy
// machine.
//
// Usage:
//
//	idenfy-bench [flags] request       request/reply, closed loop: -requesters callers
//	idenfy-bench [flags] request-rate  request/reply, open loop at -rate per second
//	idenfy-bench [flags] jobs          a backlog of -jobs durable jobs, drained
//	idenfy-bench [flags] floor         plain NATS: micro echo, JetStream publish, pull-consume-ack
//	idenfy-bench [flags] targets       every target figure of the README, with -repeat runs each
//	idenfy-bench [flags] fleet-limit   -workers processes under one WORKER_RATE_LIMIT (-limit) drain -jobs
//	idenfy-bench [flags] fleet-outage  -workers processes, -rate requests/s, iDenfy answering 503 for -outage,
//	                                   with WORKER_BREAKER=off and with its default
//
// It prints throughput, latency percentiles, upstream calls, the CPU seconds
// and peak RSS of the process under test, and each figure beside its
// baseline as a ratio; -json prints the same as JSON. Everything listens on
// 127.0.0.1 and stops by itself.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/idenfy-worker/idenfy-worker/worker"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "baseline-responder":
			err = runBaselineResponder()
		case "baseline-jobs":
			err = runBaselineJobs()
		default:
			os.Exit(runMain())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "idenfy-bench:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(runMain())
}

func runMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "idenfy-bench:", err)
		return 1
	}
	return 0
}

// options are the command line.
type options struct {
	scenario    string
	latency     time.Duration
	concurrency int
	requesters  int
	rate        int
	jobs        int
	duration    time.Duration
	warmup      time.Duration
	repeat      int
	baseline    bool
	// durableBaseline adds the durable jobs loop to the jobs comparison.
	durableBaseline bool
	jsonOut         bool
	workerBin       string
	pprofDir        string
	h2c             bool
	verbose         bool
	// workerEnv is added to the worker's environment, after the bench's own.
	workerEnv envList
	// The fleet scenarios: worker processes, their WORKER_RATE_LIMIT, and
	// how long iDenfy is down.
	workers int
	limit   string
	outage  time.Duration
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (l *envList) String() string { return strings.Join(*l, " ") }

func (l *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	*l = append(*l, v)
	return nil
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("idenfy-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.latency, "latency", 0, "the simulator's latency per call (0, 50ms, 200ms, 1s)")
	fs.IntVar(&o.concurrency, "concurrency", 64, "WORKER_CONCURRENCY of the worker, and the pool of the baselines")
	fs.IntVar(&o.requesters, "requesters", 64, "request: concurrent callers")
	fs.IntVar(&o.rate, "rate", 500, "request-rate: requests per second")
	fs.IntVar(&o.jobs, "jobs", 20000, "jobs: size of the backlog")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "request, request-rate: how long to measure")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "request: load before measuring")
	fs.IntVar(&o.repeat, "repeat", 1, "runs of each comparison, interleaved; medians are reported")
	fs.BoolVar(&o.baseline, "baseline", true, "measure the baseline beside the worker")
	fs.BoolVar(&o.durableBaseline, "durable-baseline", false, "jobs: also measure a minimal jobs loop that stores each result in the results stream before it acks")
	fs.BoolVar(&o.jsonOut, "json", false, "print the figures as JSON")
	fs.StringVar(&o.workerBin, "worker-bin", "", "the worker binary (default: go build ./cmd/idenfy-worker)")
	fs.StringVar(&o.pprofDir, "pprof", "", "write CPU profiles of the worker, and of the bench's own NATS server and simulator, to this `directory`")
	fs.BoolVar(&o.verbose, "v", false, "print the output of the programs under test when they stop")
	fs.BoolVar(&o.h2c, "h2c", true, "programs under test call the simulator over HTTP/2 (as over https), else HTTP/1.1")
	fs.Var(&o.workerEnv, "worker-env", "KEY=VALUE added to the worker's environment, e.g. WORKER_PUMPING_GUARD=1000/1h (repeatable)")
	fs.IntVar(&o.workers, "workers", 3, "fleet-limit, fleet-outage: worker processes")
	fs.StringVar(&o.limit, "limit", "100/s", "fleet-limit: WORKER_RATE_LIMIT of the fleet")
	fs.DurationVar(&o.outage, "outage", 10*time.Second, "fleet-outage: how long the simulator answers 503")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: idenfy-bench [flags] request|request-rate|jobs|floor|targets|fleet-limit|fleet-outage")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.scenario = "request"
	if fs.NArg() > 0 {
		o.scenario = fs.Arg(0)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	lim, err := worker.ParseRateLimit(o.limit)
	switch {
	case !slices.Contains([]string{"request", "request-rate", "jobs", "floor", "targets", "fleet-limit", "fleet-outage"}, o.scenario):
		return o, fmt.Errorf("unknown scenario %q", o.scenario)
	case o.concurrency < 1, o.requesters < 1, o.rate < 1, o.jobs < 2, o.repeat < 1, o.duration <= 0, o.workers < 1, o.outage <= 0:
		return o, errors.New("counts, rates and durations must be positive")
	case err != nil || lim.N == 0:
		return o, fmt.Errorf("-limit %q is not a rate limit such as 100/s", o.limit)
	}
	// The defaults of -jobs and -rate suit one worker at full speed; a
	// fleet under a limit drains 10s of it, and an outage gets a load its
	// retries do not bury the machine under.
	if o.scenario == "fleet-limit" && !set["jobs"] {
		o.jobs = max(2, int(10*float64(lim.N)/lim.Per.Seconds()))
	}
	if o.scenario == "fleet-outage" && !set["rate"] {
		o.rate = 50
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{o: o, stderr: stderr}
	if o.scenario != "floor" {
		if b.workerBin = o.workerBin; b.workerBin == "" {
			dir, err := os.MkdirTemp("", "idenfy-bench-bin-*")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if b.workerBin, err = buildWorker(ctx, dir, stderr); err != nil {
				return err
			}
		}
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}

	switch o.scenario {
	case "fleet-limit":
		return b.fleetLimit(ctx, stdout)
	case "fleet-outage":
		return b.fleetOutage(ctx, stdout)
	}
	var rep report
	rep.Machine = machine()
	switch o.scenario {
	case "request":
		rep.Comparisons, err = b.repeat(ctx, func() (comparison, error) {
			return b.compareRequests(ctx, o.latency, o.concurrency, o.requesters)
		})
	case "request-rate":
		rep.Comparisons, err = b.repeat(ctx, func() (comparison, error) {
			return b.requestRate(ctx, o.latency, o.concurrency, o.rate)
		})
	case "jobs":
		rep.Comparisons, err = b.repeat(ctx, func() (comparison, error) {
			return b.compareJobs(ctx, o.latency, o.concurrency, o.jobs)
		})
	case "floor":
		var c comparison
		c, err = b.floor(ctx)
		rep.Comparisons = []comparison{c}
	case "targets":
		rep, err = b.targets(ctx)
	}
	if err != nil {
		return err
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.print(stdout)
	return nil
}

// bench runs measurements.
type bench struct {
	o         options
	stderr    io.Writer
	workerBin string
	self      string
}

// repeat runs a comparison o.repeat times and adds one of medians.
func (b *bench) repeat(ctx context.Context, f func() (comparison, error)) ([]comparison, error) {
	var runs []comparison
	for i := range b.o.repeat {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if b.o.repeat > 1 {
			fmt.Fprintf(b.stderr, "run %d of %d\n", i+1, b.o.repeat)
		}
		c, err := f()
		if err != nil {
			return nil, err
		}
		runs = append(runs, c)
	}
	if len(runs) == 1 {
		return runs, nil
	}
	return append(runs, median(runs)), nil
}
