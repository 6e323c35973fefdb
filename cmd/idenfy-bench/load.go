package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// numbers hands out distinct E.164 numbers, so that per-number send limits
// never refuse a benchmark request. Consecutive numbers fall in different
// ranges (a range is a number without its last 3 digits): the count's last
// six digits come first, so that a range meets one send in a million, as
// real traffic meets its ranges, and the pumping guard, when a run turns
// it on, is measured at work, not pausing.
type numbers struct{ n atomic.Int64 }

func (g *numbers) next() string {
	d := fmt.Sprintf("%010d", g.n.Add(1)%1e10)
	return "+1555" + d[4:] + d[:4]
}

// sample collects latencies and outcomes.
type sample struct {
	mu        sync.Mutex
	latencies []time.Duration
	completed atomic.Int64
	failed    atomic.Int64
}

func (s *sample) add(d time.Duration, ok bool) {
	s.completed.Add(1)
	if !ok {
		s.failed.Add(1)
	}
	s.mu.Lock()
	s.latencies = append(s.latencies, d)
	s.mu.Unlock()
}

// percentiles returns the p50, p90 and p99 latencies in milliseconds.
func (s *sample) percentiles() (p50, p90, p99 float64) {
	s.mu.Lock()
	l := slices.Clone(s.latencies)
	s.mu.Unlock()
	if len(l) == 0 {
		return 0, 0, 0
	}
	slices.Sort(l)
	at := func(q float64) float64 {
		return float64(l[min(len(l)-1, int(q*float64(len(l))))]) / float64(time.Millisecond)
	}
	return at(0.50), at(0.90), at(0.99)
}

// progress prints a line every second while a measurement runs.
func progress(ctx context.Context, w io.Writer, what string, count func() int64) {
	start := time.Now()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			n := count()
			fmt.Fprintf(w, "  %s: %d done, %d/s now, %.0fs\n", what, n, n-last, time.Since(start).Seconds())
			last = n
		}
	}
}

// connections opens n connections for load, spread so that no single
// socket is the bottleneck.
func connections(url string, n int) ([]*nats.Conn, error) {
	var out []*nats.Conn
	for range n {
		nc, err := nats.Connect(url, nats.Name("idenfy-bench load"))
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, err
		}
		out = append(out, nc)
	}
	return out, nil
}

func closeAll(conns []*nats.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// closedLoop runs requesters that each send a request, wait for its
// answer and send the next, for warmup (not counted) then duration.
// window, when not nil, is called as the measurement starts and ends.
func closedLoop(ctx context.Context, conns []*nats.Conn, subject string, requesters int, warmup, duration time.Duration, stderr io.Writer, what string, window func(start bool)) (*sample, time.Duration) {
	if window == nil {
		window = func(bool) {}
	}
	var gen numbers
	s := &sample{}
	var measuring atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range requesters {
		nc := conns[i%len(conns)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ok, d := request(ctx, nc, subject, gen.next())
				if measuring.Load() {
					s.add(d, ok)
				}
			}
		}()
	}
	time.Sleep(warmup)
	pctx, cancel := context.WithCancel(ctx)
	go progress(pctx, stderr, what, s.completed.Load)
	window(true)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	window(false)
	cancel()
	close(stop)
	wg.Wait()
	return s, elapsed
}

// openLoop starts call at a fixed rate for duration, each on its own
// goroutine, whatever the answers' pace: the latency a caller sees at that
// load.
func openLoop(ctx context.Context, rate int, duration time.Duration, stderr io.Writer, what string, call func() (bool, time.Duration)) (*sample, time.Duration) {
	s := &sample{}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go progress(pctx, stderr, what, s.completed.Load)
	interval := time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; time.Since(start) < duration && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, d := call()
			s.add(d, ok)
		}()
	}
	wg.Wait()
	return s, time.Since(start)
}

func request(ctx context.Context, nc *nats.Conn, subject, phone string) (bool, time.Duration) {
	data := []byte(`{"phone_number":"` + phone + `"}`)
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	msg, err := nc.RequestWithContext(rctx, subject, data)
	d := time.Since(start)
	if err != nil {
		return false, d
	}
	var res struct {
		Status messages.Status `json:"status"`
	}
	return json.Unmarshal(msg.Data, &res) == nil && res.Status == messages.StatusSent, d
}

// publishBacklog publishes n send jobs, each with its Nats-Msg-Id, and waits
// for JetStream to store them all.
func publishBacklog(ctx context.Context, e *env, n int, stderr io.Writer) error {
	var gen numbers
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	start := time.Now()
	for i := range n {
		data := []byte(`{"phone_number":"` + gen.next() + `","correlation_id":"b` + strconv.Itoa(i) + `"}`)
		if _, err := js.PublishAsync(e.subj.JobsSend, data, jetstream.WithMsgID("bench-"+strconv.Itoa(i))); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	fmt.Fprintf(stderr, "  published a backlog of %d jobs in %.1fs\n", n, time.Since(start).Seconds())
	return nil
}

// resultCounter counts results on a subject and notes when the first and
// the last arrived.
type resultCounter struct {
	n           atomic.Int64
	failed      atomic.Int64
	mu          sync.Mutex
	first, last time.Time
	done        chan struct{}
	want        int64
}

func countResults(nc *nats.Conn, subject string, want int) (*resultCounter, *nats.Subscription, error) {
	c := &resultCounter{done: make(chan struct{}), want: int64(want)}
	sub, err := nc.Subscribe(subject, func(msg *nats.Msg) {
		now := time.Now()
		var res struct {
			Status messages.Status `json:"status"`
		}
		if json.Unmarshal(msg.Data, &res) != nil || res.Status != messages.StatusSent {
			c.failed.Add(1)
		}
		c.mu.Lock()
		if c.first.IsZero() {
			c.first = now
		}
		c.last = now
		c.mu.Unlock()
		if c.n.Add(1) == c.want {
			close(c.done)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	sub.SetPendingLimits(-1, -1)
	return c, sub, nc.Flush()
}
