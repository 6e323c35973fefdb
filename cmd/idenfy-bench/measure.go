package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
)

// Programs under test.
const (
	progWorker            = "worker"
	progBaselineResponder = "baseline responder"
	progBaselineJobs      = "baseline jobs loop"
	// progDurableJobs is the minimal jobs loop that stores each result in
	// the results stream, its ack awaited, before it acks the job: the
	// least a loop keeping README's promise of durable results does.
	progDurableJobs = "durable jobs loop"
)

// startProgram starts a program under test against e and waits until it
// serves. extra is added to a worker's environment before -worker-env.
func (b *bench) startProgram(prog string, e *env, concurrency int, extra ...string) (*process, error) {
	ready, err := freePort()
	if err != nil {
		return nil, err
	}
	var p *process
	switch prog {
	case progWorker:
		env := append(append(e.workerEnv(concurrency, ready, b.o.h2c), extra...), b.o.workerEnv...)
		if b.o.pprofDir != "" {
			env = append(env, "METRICS_PPROF=true")
		}
		p, err = startProcess(prog, b.workerBin, nil, env)
	case progBaselineResponder:
		p, err = startProcess(prog, b.self, []string{"baseline-responder"}, baselineEnv(e, concurrency, ready, b.o.h2c))
	case progBaselineJobs:
		p, err = startProcess(prog, b.self, []string{"baseline-jobs"}, baselineEnv(e, concurrency, ready, b.o.h2c))
	case progDurableJobs:
		p, err = startProcess(prog, b.self, []string{"baseline-jobs"},
			append(baselineEnv(e, concurrency, ready, b.o.h2c), "BASELINE_DURABLE_RESULTS=true"))
	}
	if err != nil {
		return nil, err
	}
	p.addr = ready
	if b.o.verbose {
		p.show = b.stderr
	}
	if err := p.waitReady("http://"+ready+"/readyz", 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// profile fetches a CPU profile of the worker during the measurement, when
// -pprof names a directory, and takes one of the bench's own process over
// the same seconds: the NATS server and the simulator, whose work on the
// shared cores is half of what a job costs.
func (b *bench) profile(p *process, name string) {
	if b.o.pprofDir == "" || p.name != progWorker {
		return
	}
	seconds := max(1, int(b.o.duration/time.Second))
	b.profileSelf(name, time.Duration(seconds)*time.Second)
	go func() {
		for _, prof := range []struct{ what, file string }{
			{fmt.Sprintf("profile?seconds=%d", seconds), ".cpu.pprof"},
			{"heap", ".heap.pprof"},
			{"goroutine", ".goroutine.pprof"},
		} {
			path := filepath.Join(b.o.pprofDir, "worker-"+name+prof.file)
			if err := p.profile(prof.what, path); err != nil {
				fmt.Fprintf(b.stderr, "  profiling the worker: %v\n", err)
				return
			}
			fmt.Fprintf(b.stderr, "  profile of the worker: %s\n", path)
		}
	}()
}

// profileSelf writes a CPU profile of the bench's process for d, in the
// background. Only one CPU profile can run at a time; a second one is skipped
// with a message.
func (b *bench) profileSelf(name string, d time.Duration) {
	path := filepath.Join(b.o.pprofDir, "bench-"+name+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(b.stderr, "  profiling the bench: %v\n", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		fmt.Fprintf(b.stderr, "  profiling the bench: %v\n", err)
		return
	}
	time.AfterFunc(d, func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(b.stderr, "  profiling the bench: %v\n", err)
			return
		}
		fmt.Fprintf(b.stderr, "  profile of the bench (NATS server, simulator): %s\n", path)
	})
}

// setUp makes a fresh env and starts prog against it.
func (b *bench) setUp(prog string, latency time.Duration, concurrency int) (*env, *process, error) {
	e, err := newEnv(latency)
	if err != nil {
		return nil, nil, err
	}
	p, err := b.startProgram(prog, e, concurrency)
	if err != nil {
		e.close()
		return nil, nil, err
	}
	return e, p, nil
}

// compare measures the worker, and the baseline when -baseline, under the
// same load, one after the other, each in an env of its own.
func (b *bench) compare(name, baseline string, measure func(prog string) (figure, error)) (comparison, error) {
	c := comparison{Name: name}
	progs := []string{progWorker}
	if b.o.baseline {
		progs = append(progs, baseline)
		if baseline == progBaselineJobs && b.o.durableBaseline {
			progs = append(progs, progDurableJobs)
		}
	}
	for _, prog := range progs {
		f, err := measure(prog)
		if err != nil {
			return c, err
		}
		c.Figures = append(c.Figures, f)
	}
	c.ratio()
	return c, nil
}

// compareRequests measures the worker and the baseline responder under the
// same closed-loop request/reply load.
func (b *bench) compareRequests(ctx context.Context, latency time.Duration, concurrency, requesters int) (comparison, error) {
	name := fmt.Sprintf("request/reply, simulator %v, %d requesters, concurrency %d", latency, requesters, concurrency)
	return b.compare(name, progBaselineResponder, func(prog string) (figure, error) {
		return b.measureRequests(ctx, prog, latency, concurrency, requesters)
	})
}

func (b *bench) measureRequests(ctx context.Context, prog string, latency time.Duration, concurrency, requesters int) (figure, error) {
	f := figure{Program: prog, Intake: "request", SimLatencyMs: ms(latency), Concurrency: concurrency, Load: fmt.Sprintf("%d requesters", requesters)}
	e, p, err := b.setUp(prog, latency, concurrency)
	if err != nil {
		return f, err
	}
	defer e.close()
	defer p.stop()
	conns, err := connections(e.natsURL, min(8, max(1, requesters/64)))
	if err != nil {
		return f, err
	}
	defer closeAll(conns)

	b.profile(p, fmt.Sprintf("request-%v-%d", latency, requesters))
	var u0, u1, self0, self1 usage
	var stack, heap float64
	s, elapsed := closedLoop(ctx, conns, e.subj.Send, requesters, b.o.warmup, b.o.duration, b.stderr, prog, func(start bool) {
		if start {
			u0, _ = p.usage()
			self0, _ = readUsage(os.Getpid())
			return
		}
		u1, _ = p.usage()
		self1, _ = readUsage(os.Getpid())
		stack, heap = p.goMemory()
	})
	f.fill(s, elapsed, u1.cpu-u0.cpu, u1.peakRSS, 0)
	f.UpstreamCalls = s.completed.Load() // one call per request: the loads never fail over
	f.BenchCPUSeconds = (self1.cpu - self0.cpu).Seconds()
	f.StackMiB, f.HeapMiB = stack/(1<<20), heap/(1<<20)
	return f, nil
}

// requestRate measures the latency a caller sees at a fixed request rate,
// beside the simulator's own latency at the same rate (measured by calling
// it directly), so that the worker's added latency reads off directly.
func (b *bench) requestRate(ctx context.Context, latency time.Duration, concurrency, rate int) (comparison, error) {
	c := comparison{Name: fmt.Sprintf("request/reply at %d/s, simulator %v, concurrency %d", rate, latency, concurrency)}
	f, err := b.measureRequestRate(ctx, progWorker, latency, concurrency, rate)
	if err != nil {
		return c, err
	}
	c.Figures = append(c.Figures, f)
	direct, err := b.measureSimulatorDirect(ctx, latency, rate)
	if err != nil {
		return c, err
	}
	c.Figures = append(c.Figures, direct)
	c.AddedP99Ms = f.P99Ms - direct.P99Ms
	return c, nil
}

func (b *bench) measureRequestRate(ctx context.Context, prog string, latency time.Duration, concurrency, rate int) (figure, error) {
	f := figure{Program: prog, Intake: "request", SimLatencyMs: ms(latency), Concurrency: concurrency, Load: fmt.Sprintf("%d/s", rate)}
	e, p, err := b.setUp(prog, latency, concurrency)
	if err != nil {
		return f, err
	}
	defer e.close()
	defer p.stop()
	conns, err := connections(e.natsURL, 4)
	if err != nil {
		return f, err
	}
	defer closeAll(conns)
	var gen numbers
	var i atomic.Int64
	call := func() (bool, time.Duration) {
		return request(ctx, conns[int(i.Add(1))%len(conns)], e.subj.Send, gen.next())
	}
	// Warm the connection pools up at the same rate, then measure.
	openLoop(ctx, rate, b.o.warmup, b.stderr, prog+" warmup", call)
	u0, _ := p.usage()
	up0 := e.upstream()
	s, elapsed := openLoop(ctx, rate, b.o.duration, b.stderr, prog, call)
	u1, _ := p.usage()
	f.fill(s, elapsed, u1.cpu-u0.cpu, u1.peakRSS, e.upstream()-up0)
	return f, nil
}

// compareJobs measures how fast the worker and the baseline jobs loop drain
// the same backlog.
func (b *bench) compareJobs(ctx context.Context, latency time.Duration, concurrency, jobs int) (comparison, error) {
	name := fmt.Sprintf("jobs backlog of %d, simulator %v, concurrency %d", jobs, latency, concurrency)
	return b.compare(name, progBaselineJobs, func(prog string) (figure, error) {
		return b.measureBacklog(ctx, prog, latency, concurrency, jobs)
	})
}

func (b *bench) measureBacklog(ctx context.Context, prog string, latency time.Duration, concurrency, jobs int) (figure, error) {
	f := figure{Program: prog, Intake: "jobs", SimLatencyMs: ms(latency), Concurrency: concurrency, Load: fmt.Sprintf("%d jobs", jobs)}
	e, err := newEnv(latency)
	if err != nil {
		return f, err
	}
	defer e.close()
	setup, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := e.createJobs(setup, max(1000, 10*concurrency)); err != nil {
		return f, err
	}
	if err := publishBacklog(setup, e, jobs, b.stderr); err != nil {
		return f, err
	}
	counter, sub, err := countResults(e.nc, e.subj.ResultsSend, jobs)
	if err != nil {
		return f, err
	}
	defer func() { _ = sub.Unsubscribe() }()

	start := time.Now()
	self0, _ := readUsage(os.Getpid())
	in0, out0 := e.natsMsgs()
	p, err := b.startProgram(prog, e, concurrency)
	if err != nil {
		return f, err
	}
	defer p.stop()
	b.profile(p, fmt.Sprintf("jobs-%v-%d", latency, jobs))
	pctx, stop := context.WithCancel(ctx)
	go progress(pctx, b.stderr, prog, counter.n.Load)
	select {
	case <-counter.done:
	case <-time.After(10 * time.Minute):
		stop()
		return f, fmt.Errorf("%s: %d of %d results after 10 minutes", prog, counter.n.Load(), jobs)
	case <-ctx.Done():
		stop()
		return f, ctx.Err()
	}
	stop()
	u, err := p.usage()
	if err != nil {
		return f, err
	}
	self1, _ := readUsage(os.Getpid())
	in1, out1 := e.natsMsgs()
	f.BenchCPUSeconds = (self1.cpu - self0.cpu).Seconds()
	f.NATSInPerItem = float64(in1-in0) / float64(jobs)
	f.NATSOutPerItem = float64(out1-out0) / float64(jobs)
	f.SyscallsPerItem = float64(u.syscalls) / float64(jobs)
	counter.mu.Lock()
	first, last := counter.first, counter.last
	counter.mu.Unlock()
	f.Completed = counter.n.Load()
	f.Failed = counter.failed.Load()
	f.Seconds = last.Sub(start).Seconds()
	// The rate between the first and the last result leaves the process's
	// start-up out of it.
	f.PerSecond = float64(jobs-1) / last.Sub(first).Seconds()
	f.UpstreamCalls = e.upstream()
	f.CPUSeconds = u.cpu.Seconds()
	f.PeakRSSMiB = mib(u.peakRSS)
	return f, nil
}

// measureSimulatorDirect calls the simulator over HTTP at the same rate,
// with the worker's own HTTP client, for the latency floor of request-rate.
func (b *bench) measureSimulatorDirect(ctx context.Context, latency time.Duration, rate int) (figure, error) {
	f := figure{Program: "simulator, called directly", Intake: "http", SimLatencyMs: ms(latency), Load: fmt.Sprintf("%d/s", rate)}
	e, err := newEnv(latency)
	if err != nil {
		return f, err
	}
	defer e.close()
	c, err := baselineConfig{idenfyURL: e.simURL, concurrency: 1024, h2c: b.o.h2c}.client()
	if err != nil {
		return f, err
	}
	var gen numbers
	call := func() (bool, time.Duration) {
		start := time.Now()
		_, err := c.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: gen.next()})
		return err == nil, time.Since(start)
	}
	openLoop(ctx, rate, b.o.warmup, b.stderr, "simulator warmup", call)
	s, elapsed := openLoop(ctx, rate, b.o.duration, b.stderr, "simulator", call)
	f.fill(s, elapsed, 0, 0, e.upstream())
	return f, nil
}

// floor measures plain NATS on this machine, with no HTTP and no policy:
// a micro echo service, JetStream publishing, and pull-consume-ack.
func (b *bench) floor(ctx context.Context) (comparison, error) {
	c := comparison{Name: "plain NATS floor (server and clients in this process)"}
	e, err := newEnv(0)
	if err != nil {
		return c, err
	}
	defer e.close()

	svc, err := micro.AddService(e.nc, micro.Config{Name: "echo", Version: "0.0.1"})
	if err != nil {
		return c, err
	}
	defer func() { _ = svc.Stop() }()
	if err := svc.AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) }), micro.WithEndpointSubject("bench.echo")); err != nil {
		return c, err
	}
	conns, err := connections(e.natsURL, 2)
	if err != nil {
		return c, err
	}
	defer closeAll(conns)
	s, elapsed := closedLoop(ctx, conns, "bench.echo", 64, b.o.warmup, b.o.duration, b.stderr, "micro echo", nil)
	echo := figure{Program: "micro echo", Intake: "request", Load: "64 requesters"}
	echo.fill(s, elapsed, 0, 0, 0)
	// Echo answers are not SendResults; every answer counts.
	echo.Failed = 0
	c.Figures = append(c.Figures, echo)

	pub, con, err := jetstreamFloor(ctx, e, 100000)
	if err != nil {
		return c, err
	}
	c.Figures = append(c.Figures, pub, con)
	return c, nil
}

// jetstreamFloor publishes n messages to a file stream (async, all acked)
// and consumes them with pull-consume-ack.
func jetstreamFloor(ctx context.Context, e *env, n int) (figure, figure, error) {
	pub := figure{Program: "JetStream publish", Intake: "jobs", Load: fmt.Sprintf("%d messages", n)}
	con := figure{Program: "JetStream pull-consume-ack", Intake: "jobs", Load: fmt.Sprintf("%d messages", n)}
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return pub, con, err
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.>"}, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		return pub, con, err
	}
	payload := []byte(`{"phone_number":"+15550000000001","correlation_id":"floor"}`)
	start := time.Now()
	for range n {
		if _, err := js.PublishAsync("floor.jobs", payload); err != nil {
			return pub, con, err
		}
	}
	<-js.PublishAsyncComplete()
	pub.Seconds = time.Since(start).Seconds()
	pub.Completed, pub.PerSecond = int64(n), float64(n)/pub.Seconds

	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000})
	if err != nil {
		return pub, con, err
	}
	// A pull whose heartbeats a starved machine missed is made again, not
	// reported as the end of the floor.
	iter, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return pub, con, err
	}
	defer iter.Stop()
	start = time.Now()
	for range n {
		msg, err := iter.Next()
		if err != nil {
			return pub, con, err
		}
		if err := msg.Ack(); err != nil {
			return pub, con, err
		}
	}
	if err := e.nc.Flush(); err != nil {
		return pub, con, err
	}
	con.Seconds = time.Since(start).Seconds()
	con.Completed, con.PerSecond = int64(n), float64(n)/con.Seconds
	return pub, con, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(b int64) float64        { return float64(b) / (1 << 20) }
