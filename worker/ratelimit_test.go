package worker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Turns of the rate limit go to waiting requests before waiting jobs, and
// a call whose budget ends before its likely turn is refused at once.
func TestFleetRateLimitInteractiveFirst(t *testing.T) {
	clock := newManualClock()
	fs := startFleets(t, 1, fleetSetup{clock: clock, rate: RateLimit{N: 1, Per: time.Second}})
	f := fs[0]
	if _, err := f.admit(context.Background(), false); err != nil {
		t.Fatalf("admit with a full bucket = %v, want a turn", err)
	}
	queued := func(interactive, jobs int) func() bool {
		return func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.lim.waiting.interactive) == interactive && len(f.lim.waiting.jobs) == jobs
		}
	}
	order := make(chan string, 3)
	wait := func(name string, interactive bool) {
		go func() {
			if _, err := f.admit(context.Background(), interactive); err != nil {
				order <- name + ": " + err.Error()
				return
			}
			order <- name
		}()
	}
	wait("job 1", false)
	eventually(t, "job 1 waits", queued(0, 1))
	wait("job 2", false)
	eventually(t, "job 2 waits", queued(0, 2))

	for _, tt := range []struct {
		interactive bool
		want        time.Duration
	}{{false, 3 * time.Second}, {true, time.Second}} {
		_, err := f.admit(withTimeout(t, 500*time.Millisecond), tt.interactive)
		if r := refusal(err); r == nil || r.Reason != refusedRateLimit || r.RetryAfter != tt.want {
			t.Errorf("admit(interactive %v) with a 500ms budget at 1/s behind 2 jobs = %v, want a rate_limit refusal with retry after %v",
				tt.interactive, err, tt.want)
		}
	}

	wait("request", true)
	eventually(t, "the request waits", queued(1, 2))
	var got []string
	for range 3 {
		eventually(t, "the limiter waits for a token", func() bool { return clock.waiting() > 0 })
		clock.Advance(time.Second + time.Millisecond)
		select {
		case name := <-order:
			got = append(got, name)
		case <-time.After(10 * time.Second):
			t.Fatalf("no turn after a second's refill; granted so far: %v", got)
		}
	}
	if want := []string{"request", "job 1", "job 2"}; !slices.Equal(got, want) {
		t.Errorf("turns went to %v, want %v", got, want)
	}
}

// Three workers with a backlog share one limit: no second sees more than
// the limit's second share plus a burst of at most another, the backlog
// drains near the full rate, and a worker that dies holds no turns past
// its short lease. This test runs on the wall clock, since JetStream does:
// its bounds are the design's, with room for a slow machine; the measured
// rates are logged.
func TestFleetRateLimitHoldsAcrossWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 11s on the wall clock")
	}
	for _, rate := range []int{40, 300} {
		t.Run(fmt.Sprintf("%d per second", rate), func(t *testing.T) { testFleetRateLimit(t, rate) })
	}
}

func testFleetRateLimit(t *testing.T, rate int) {
	fs := startFleets(t, 3, fleetSetup{clock: systemClock{}, rate: RateLimit{N: rate, Per: time.Second}})
	var mu sync.Mutex
	var grants []time.Time
	var wg sync.WaitGroup
	stopAll, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	for i := range fs {
		for g := range 8 {
			wg.Go(func() {
				for stopAll.Err() == nil {
					if _, err := fs[i].admit(stopAll, g == 0); err != nil {
						return
					}
					mu.Lock()
					grants = append(grants, time.Now())
					mu.Unlock()
				}
			})
		}
	}
	start := time.Now()
	time.Sleep(3 * time.Second)
	fs[2].nc.Close() // dies: no stop, its leased tokens left behind
	died := time.Now()
	time.Sleep(2500 * time.Millisecond)
	cancelAll()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(grants, func(a, b time.Time) int { return a.Compare(b) })
	within := func(from, to time.Time) int {
		n := 0
		for _, g := range grants {
			if !g.Before(from) && g.Before(to) {
				n++
			}
		}
		return n
	}
	most := 0
	for j, g := range grants {
		k, _ := slices.BinarySearchFunc(grants[j:], g.Add(time.Second), func(a, b time.Time) int { return a.Compare(b) })
		most = max(most, k)
	}
	t.Logf("most turns in any 1s window: %d (limit %d/s, bound %d)", most, rate, 2*rate)
	if most > 2*rate {
		t.Errorf("%d turns in one second, want at most %d (the limit and a second's share)", most, 2*rate)
	}

	backlog := float64(within(start.Add(500*time.Millisecond), died)) / died.Sub(start.Add(500*time.Millisecond)).Seconds()
	after := float64(within(died.Add(500*time.Millisecond), died.Add(2500*time.Millisecond))) / 2
	t.Logf("backlog drained at %.1f/s with 3 workers (%.0f%% of the limit), %.1f/s by 2 after the third died (%.0f%%)",
		backlog, 100*backlog/float64(rate), after, 100*after/float64(rate))
	if backlog < float64(rate)/2 {
		t.Errorf("3 workers with a backlog got %.1f turns/s, want at least half the limit of %d/s", backlog, rate)
	}
	if after < float64(rate)/2 {
		t.Errorf("after a worker died the 2 others got %.1f turns/s, want at least half the limit of %d/s", after, rate)
	}
}

// The bucket's sizes keep the burst within a second's share of the limit
// (at least one call) at the quota of a default account as at a few
// hundred per second.
func TestFleetLimiterSizes(t *testing.T) {
	tests := []struct {
		name          string
		limit         RateLimit
		wantCapacity  float64
		wantBatch     int
		wantBurstMost float64
	}{
		{name: "10000/1h", limit: RateLimit{N: 10000, Per: time.Hour}, wantCapacity: 1.39, wantBatch: 1, wantBurstMost: 2.78},
		{name: "1/s", limit: RateLimit{N: 1, Per: time.Second}, wantCapacity: 1, wantBatch: 1, wantBurstMost: 1.25},
		{name: "20/s", limit: RateLimit{N: 20, Per: time.Second}, wantCapacity: 10, wantBatch: 2, wantBurstMost: 20},
		{name: "300/s", limit: RateLimit{N: 300, Per: time.Second}, wantCapacity: 150, wantBatch: 30, wantBurstMost: 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newFleetLimiter(&fleet{}, tt.limit)
			burst := l.capacity + l.rate*tokenLease.Seconds()
			if d := l.capacity - tt.wantCapacity; d > 0.01 || d < -0.01 || l.batch != tt.wantBatch || burst > tt.wantBurstMost {
				t.Errorf("newFleetLimiter(%v) = capacity %.2f, batch %d, burst %.2f; want %.2f, %d, at most %.2f",
					tt.limit, l.capacity, l.batch, burst, tt.wantCapacity, tt.wantBatch, tt.wantBurstMost)
			}
		})
	}
}
