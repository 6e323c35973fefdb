package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// figure is one program measured under one load.
type figure struct {
	Program       string  `json:"program"`
	Intake        string  `json:"intake"`
	SimLatencyMs  float64 `json:"sim_latency_ms"`
	Concurrency   int     `json:"concurrency,omitempty"`
	Load          string  `json:"load"`
	Completed     int64   `json:"completed"`
	Failed        int64   `json:"failed"`
	Seconds       float64 `json:"seconds"`
	PerSecond     float64 `json:"per_second"`
	P50Ms         float64 `json:"p50_ms,omitempty"`
	P90Ms         float64 `json:"p90_ms,omitempty"`
	P99Ms         float64 `json:"p99_ms,omitempty"`
	UpstreamCalls int64   `json:"upstream_calls"`
	CPUSeconds    float64 `json:"cpu_seconds,omitempty"`
	// BenchCPUSeconds is this process's CPU over the same window: the NATS
	// server, the simulator and the load, which share the machine.
	BenchCPUSeconds float64 `json:"bench_cpu_seconds,omitempty"`
	PeakRSSMiB      float64 `json:"peak_rss_mib,omitempty"`
	// StackMiB and HeapMiB are the Go runtime's own figures at the end of
	// the window, where the program reports them (the worker).
	StackMiB float64 `json:"stack_mib,omitempty"`
	HeapMiB  float64 `json:"heap_mib,omitempty"`
	// NATSInPerItem and NATSOutPerItem are the messages the NATS server
	// received from its clients and sent to them over the window, per item
	// done: every JetStream write, ack and pull is one or more of them.
	NATSInPerItem  float64 `json:"nats_in_per_item,omitempty"`
	NATSOutPerItem float64 `json:"nats_out_per_item,omitempty"`
	// SyscallsPerItem is the program's read and write system calls per item.
	SyscallsPerItem float64 `json:"syscalls_per_item,omitempty"`
}

func (f *figure) fill(s *sample, elapsed, cpu time.Duration, peakRSS, upstream int64) {
	f.Completed = s.completed.Load()
	f.Failed = s.failed.Load()
	f.Seconds = elapsed.Seconds()
	f.PerSecond = float64(f.Completed) / f.Seconds
	f.P50Ms, f.P90Ms, f.P99Ms = s.percentiles()
	f.UpstreamCalls = upstream
	f.CPUSeconds = cpu.Seconds()
	f.PeakRSSMiB = mib(peakRSS)
}

// comparison is the figures of one load, the worker first; Ratio is the
// worker's throughput over the baseline's.
type comparison struct {
	Name    string   `json:"name"`
	Figures []figure `json:"figures"`
	Ratio   float64  `json:"ratio,omitempty"`
	// DurableRatio is the worker's throughput over the durable jobs loop's,
	// with -durable-baseline.
	DurableRatio float64 `json:"durable_ratio,omitempty"`
	AddedP99Ms   float64 `json:"added_p99_ms,omitempty"`
	Median       bool    `json:"median,omitempty"`
}

func (c *comparison) ratio() {
	if len(c.Figures) >= 2 && c.Figures[1].PerSecond > 0 {
		c.Ratio = c.Figures[0].PerSecond / c.Figures[1].PerSecond
	}
	if len(c.Figures) == 3 && c.Figures[2].PerSecond > 0 {
		c.DurableRatio = c.Figures[0].PerSecond / c.Figures[2].PerSecond
	}
}

// median returns a comparison whose every number is the median over runs.
func median(runs []comparison) comparison {
	m := comparison{Name: runs[0].Name + fmt.Sprintf(" (median of %d runs)", len(runs)), Median: true}
	med := func(get func(comparison) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = get(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	for i := range runs[0].Figures {
		f := runs[0].Figures[i]
		at := func(get func(figure) float64) float64 {
			return med(func(c comparison) float64 { return get(c.Figures[i]) })
		}
		f.Seconds = at(func(f figure) float64 { return f.Seconds })
		f.PerSecond = at(func(f figure) float64 { return f.PerSecond })
		f.P50Ms = at(func(f figure) float64 { return f.P50Ms })
		f.P90Ms = at(func(f figure) float64 { return f.P90Ms })
		f.P99Ms = at(func(f figure) float64 { return f.P99Ms })
		f.CPUSeconds = at(func(f figure) float64 { return f.CPUSeconds })
		f.BenchCPUSeconds = at(func(f figure) float64 { return f.BenchCPUSeconds })
		f.PeakRSSMiB = at(func(f figure) float64 { return f.PeakRSSMiB })
		f.NATSInPerItem = at(func(f figure) float64 { return f.NATSInPerItem })
		f.NATSOutPerItem = at(func(f figure) float64 { return f.NATSOutPerItem })
		f.SyscallsPerItem = at(func(f figure) float64 { return f.SyscallsPerItem })
		f.Completed = int64(at(func(f figure) float64 { return float64(f.Completed) }))
		f.Failed = int64(at(func(f figure) float64 { return float64(f.Failed) }))
		f.UpstreamCalls = int64(at(func(f figure) float64 { return float64(f.UpstreamCalls) }))
		m.Figures = append(m.Figures, f)
	}
	m.Ratio = med(func(c comparison) float64 { return c.Ratio })
	m.DurableRatio = med(func(c comparison) float64 { return c.DurableRatio })
	m.AddedP99Ms = med(func(c comparison) float64 { return c.AddedP99Ms })
	return m
}

// target is one goal of the README and what was measured for it.
type target struct {
	Goal     string  `json:"goal"`
	Measured float64 `json:"measured"`
	Want     string  `json:"want"`
	Met      bool    `json:"met"`
}

// report is the output of a run.
type report struct {
	Machine     string       `json:"machine"`
	Comparisons []comparison `json:"comparisons"`
	Targets     []target     `json:"targets,omitempty"`
}

func (r report) print(w io.Writer) {
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
	for _, c := range r.Comparisons {
		fmt.Fprintf(w, "\n%s\n", c.Name)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "program\tdone\tfailed\tper second\tp50 ms\tp90 ms\tp99 ms\tupstream calls\tCPU s\tbench CPU s\tpeak RSS MiB\t")
		for _, f := range c.Figures {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%.1f\t%.1f\t%.0f\t\n",
				f.Program, f.Completed, f.Failed, f.PerSecond, f.P50Ms, f.P90Ms, f.P99Ms, f.UpstreamCalls, f.CPUSeconds, f.BenchCPUSeconds, f.PeakRSSMiB)
		}
		tw.Flush()
		for _, f := range c.Figures {
			if f.StackMiB > 0 {
				fmt.Fprintf(w, "%s at the end: stacks %.0f MiB, heap %.0f MiB\n", f.Program, f.StackMiB, f.HeapMiB)
			}
			if f.NATSInPerItem > 0 {
				fmt.Fprintf(w, "%s: the NATS server received %.1f and sent %.1f messages per item; the program made %.1f read and write syscalls per item\n",
					f.Program, f.NATSInPerItem, f.NATSOutPerItem, f.SyscallsPerItem)
			}
		}
		if c.Ratio > 0 {
			fmt.Fprintf(w, "worker / baseline throughput: %.2f\n", c.Ratio)
		}
		if c.DurableRatio > 0 {
			fmt.Fprintf(w, "worker / durable jobs loop throughput: %.2f\n", c.DurableRatio)
		}
		if c.AddedP99Ms != 0 {
			fmt.Fprintf(w, "p99 added by NATS and the worker: %.2f ms\n", c.AddedP99Ms)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range r.Targets {
			met := "met"
			if !t.Met {
				met = "NOT MET"
			}
			fmt.Fprintf(tw, "%s\t%.2f\t(want %s)\t%s\n", t.Goal, t.Measured, t.Want, met)
		}
		tw.Flush()
	}
}

// machine describes where the figures came from.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%s, %d CPUs, %s %s/%s", model, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// targets measures every goal of the README, each with -repeat runs.
func (b *bench) targets(ctx context.Context) (report, error) {
	rep := report{Machine: machine()}
	add := func(cs []comparison, err error) (comparison, error) {
		if err != nil {
			return comparison{}, err
		}
		rep.Comparisons = append(rep.Comparisons, cs...)
		return cs[len(cs)-1], nil
	}
	floor, err := b.floor(ctx)
	if err != nil {
		return rep, err
	}
	rep.Comparisons = append(rep.Comparisons, floor)

	jobs, err := add(b.repeat(ctx, func() (comparison, error) { return b.compareJobs(ctx, 0, 64, b.o.jobs) }))
	if err != nil {
		return rep, err
	}
	rep.Targets = append(rep.Targets, target{"jobs backlog at 0 ms: worker / minimal jobs loop", jobs.Ratio, ">= 0.70", jobs.Ratio >= 0.70})

	req, err := add(b.repeat(ctx, func() (comparison, error) { return b.compareRequests(ctx, 0, 64, 64) }))
	if err != nil {
		return rep, err
	}
	rep.Targets = append(rep.Targets, target{"request/reply at 0 ms, 64 requesters: worker / minimal responder", req.Ratio, ">= 0.70", req.Ratio >= 0.70})

	latencyBound := 200 * time.Millisecond
	reqLB, err := add(b.repeat(ctx, func() (comparison, error) {
		return b.compareRequests(ctx, latencyBound, 1000, 1200)
	}))
	if err != nil {
		return rep, err
	}
	rate := reqLB.Figures[0].PerSecond
	rep.Targets = append(rep.Targets, target{"request/reply at 200 ms, concurrency 1000, 1200 requesters: per second", rate, ">= 4750", rate >= 4750})

	jobsLB, err := add(b.repeat(ctx, func() (comparison, error) { return b.compareJobs(ctx, latencyBound, 1000, 30000) }))
	if err != nil {
		return rep, err
	}
	rate = jobsLB.Figures[0].PerSecond
	rep.Targets = append(rep.Targets, target{"jobs backlog at 200 ms, concurrency 1000: per second", rate, ">= 4750", rate >= 4750})

	// The baseline's figure is the floor: the same load through net/http and
	// NATS micro with nothing else.
	mem, err := add(b.repeat(ctx, func() (comparison, error) { return b.compareRequests(ctx, time.Second, 10000, 10000) }))
	if err != nil {
		return rep, err
	}
	rss := mem.Figures[0].PeakRSSMiB
	rep.Targets = append(rep.Targets, target{"peak RSS with 10,000 requests in flight (MiB)", rss, "< 256", rss < 256})
	if len(mem.Figures) > 1 {
		floor := mem.Figures[1].PeakRSSMiB
		rep.Targets = append(rep.Targets, target{"  the minimal responder's peak RSS at the same load (MiB), for reference", floor, "< 256", floor < 256})
	}

	// Half the saturating rate: 64 in flight at 50 ms saturate at 1280/s.
	added, err := add(b.repeat(ctx, func() (comparison, error) { return b.requestRate(ctx, 50*time.Millisecond, 64, 640) }))
	if err != nil {
		return rep, err
	}
	rep.Targets = append(rep.Targets, target{"p99 added at half the saturating rate (ms)", added.AddedP99Ms, "<= 2", added.AddedP99Ms <= 2})
	return rep, nil
}
