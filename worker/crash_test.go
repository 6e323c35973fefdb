package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The tests here kill or restart things: worker processes (the test binary
// re-executed as a worker, see TestMain) and the NATS server.

// captureResults creates the results stream before any worker does, as
// the worker would (which then uses it as it is), so that the test can read
// every result event, none missed while a subscriber or the server is away.
func captureResults(t testing.TB, js jetstream.JetStream, subj messages.Subjects) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       worker.DefaultResultsStream,
		Subjects:   []string{subj.Results},
		Storage:    jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// resultsByID reads every captured result, by correlation_id.
func resultsByID(t testing.TB, js jetstream.JetStream, s jetstream.Stream) map[string][]messages.SendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]messages.SendResult)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for n := uint64(0); n < info.State.Msgs; n++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("reading result %d of %d: %v", n+1, info.State.Msgs, err)
		}
		var r messages.SendResult
		if err := json.Unmarshal(msg.Data(), &r); err != nil {
			t.Fatal(err)
		}
		out[r.CorrelationID] = append(out[r.CorrelationID], r)
	}
	return out
}

func streamMsgs(t testing.TB, s jetstream.Stream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		return ^uint64(0)
	}
	return info.State.Msgs
}

// createJobsTopology creates the stream and a consumer with a short ack
// wait, as an operator may, so that the jobs of a killed worker come back
// within seconds rather than the default 30s.
func createJobsTopology(t testing.TB, js jetstream.JetStream, subj messages.Subjects, ackWait time.Duration) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      worker.DefaultStream,
		Subjects:  []string{subj.Jobs},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, worker.DefaultStream, jetstream.ConsumerConfig{
		Durable:       worker.DefaultConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    50,
		MaxAckPending: 10000,
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func publishJobs(t testing.TB, js jetstream.JetStream, subj messages.Subjects, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range n {
		data, _ := json.Marshal(messages.SendRequest{
			PhoneNumber:   fmt.Sprintf("+1202555%04d", i),
			CorrelationID: fmt.Sprint("job-", i),
		})
		if _, err := js.PublishAsync(subj.JobsSend, data, jetstream.WithMsgID(fmt.Sprint("crash-", i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing jobs timed out")
	}
}

// A worker killed with SIGKILL in the middle of hundreds of jobs loses
// none: another worker finishes them, taking over the dead one's claims.
// Upstream sends exceed the job count by at most the claims the dead worker
// held: its jobs slots, twice its concurrency (calls in flight, and calls
// answered whose outcome was not yet stored), each of which may or may not
// have reached iDenfy.
func TestKilledWorkerLosesNoJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const jobs, concurrency = 300, 32
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	if err := sim.InjectFault(idenfytest.Fault{Latency: "100ms"}); err != nil {
		t.Fatal(err)
	}
	nc := natstest.Connect(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subj := messages.NewSubjects(messages.DefaultPrefix)
	results := captureResults(t, js, subj)
	jobStream := createJobsTopology(t, js, subj, 2*time.Second)
	publishJobs(t, js, subj, jobs)

	env := []string{fmt.Sprint("CHILD_CONCURRENCY=", concurrency), "CHILD_LEASE=2s", "CHILD_SEND_LIMITS=off"}
	first := startChild(t, ns.ClientURL(), sim.URL, env...)
	waitFor(t, "the first worker to be in the middle of the batch", func() bool { return sim.Stats().SendSMS >= jobs/3 })
	first.kill(t)
	killedAt := sim.Stats().SendSMS

	startChild(t, ns.ClientURL(), sim.URL, env...)
	// A job is acked only after its result is published, on the same
	// connection: once the stream is empty, every result is captured.
	waitFor(t, "every job to be acked", func() bool { return streamMsgs(t, jobStream) == 0 })
	byID := resultsByID(t, js, results)
	dupes := 0
	for i := range jobs {
		rs := byID[fmt.Sprint("job-", i)]
		if len(rs) == 0 {
			t.Errorf("job %d has no result", i)
			continue
		}
		for _, r := range rs {
			if r.Status != messages.StatusSent || r.RequestID == "" {
				t.Errorf("job %d result = %+v, want sent", i, r)
			}
			if r.PossibleDuplicate {
				dupes++
			}
		}
	}
	sends := sim.Stats().SendSMS
	t.Logf("%d jobs, %d sends upstream (%d when the first worker was killed), %d results flagged possible_duplicate", jobs, sends, killedAt, dupes)
	if sends < jobs || sends > jobs+2*concurrency {
		t.Errorf("iDenfy got %d sends for %d jobs, want between %d and %d", sends, jobs, jobs, jobs+2*concurrency)
	}
}

// NATS restarting in the middle of a batch: every job still completes once
// the server is back. Results are core NATS events: one in flight when the
// server went down may be lost even though its job was acked, but the
// outcome is stored, so asking again with the job's Nats-Msg-Id answers it
// without calling iDenfy.
func TestNATSRestartMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the NATS server")
	}
	dir := t.TempDir()
	ns := startNATSAt(t, -1, dir)
	port := portOf(t, ns.ClientURL())
	h := newHarness(t, withoutStart(), withWallClock(), func(s *harnessSetup) { s.ns = ns },
		withConfig(func(c *worker.Config) { c.Concurrency = 16 }),
		withWorkerOptions(worker.WithLease(2*time.Second), worker.WithJobRetryDelay(200*time.Millisecond)))
	if err := h.sim.InjectFault(idenfytest.Fault{Latency: "20ms"}); err != nil {
		t.Fatal(err)
	}
	// The test's own connection must come back too.
	results := captureResults(t, h.js, h.subj)
	jobStream := createJobsTopology(t, h.js, h.subj, 2*time.Second)
	const jobs = 200
	publishJobs(t, h.js, h.subj, jobs)
	h.start()
	waitFor(t, "the batch to be under way", func() bool { return h.sim.Stats().SendSMS >= 40 })

	ns.Shutdown()
	ns.WaitForShutdown()
	restarted := startNATSAt(t, port, dir)
	t.Logf("NATS restarted on %s after %d sends", restarted.ClientURL(), h.sim.Stats().SendSMS)

	waitFor(t, "every job to be acked", func() bool { return streamMsgs(t, jobStream) == 0 })
	byID := resultsByID(t, h.js, results)
	sends := h.sim.Stats().SendSMS
	missing := 0
	for i := range jobs {
		if len(byID[fmt.Sprint("job-", i)]) > 0 {
			continue
		}
		missing++
		job := messages.SendRequest{PhoneNumber: fmt.Sprintf("+1202555%04d", i), CorrelationID: fmt.Sprint("job-", i)}
		res := h.send(job, header(messages.HeaderMsgID, fmt.Sprint("crash-", i)))
		byID[job.CorrelationID] = append(byID[job.CorrelationID], res)
	}
	if n := h.sim.Stats().SendSMS; n != sends {
		t.Errorf("asking again for %d lost results made %d sends, want none", missing, n-sends)
	}
	t.Logf("%d of %d results lost with the server, asked again by Nats-Msg-Id", missing, jobs)
	for id, rs := range byID {
		for _, r := range rs {
			if r.Status != messages.StatusSent {
				t.Errorf("%s result = %+v, want sent", id, r)
			}
		}
	}
}

func portOf(t testing.TB, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("port of %q: %v", rawURL, err)
	}
	return port
}

// Send limits hold across worker processes: twenty concurrent sends to one
// number through two workers, with a limit of 3, text it 3 times.
func TestSendLimitsAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	env := []string{"CHILD_CONCURRENCY=16", "CHILD_SEND_LIMITS=3/10m"}
	a := startChild(t, ns.ClientURL(), sim.URL, env...)
	b := startChild(t, ns.ClientURL(), sim.URL, env...)
	nc := natstest.Connect(t, ns.ClientURL())
	subj := messages.NewSubjects(messages.DefaultPrefix)

	const phone = "+12025550163"
	var (
		mu      sync.Mutex
		counts  = map[string]int{}
		workers = map[string]bool{}
		wg      sync.WaitGroup
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, _ := json.Marshal(messages.SendRequest{PhoneNumber: phone})
			msg, err := nc.Request(subj.Send, data, 30*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			var r messages.SendResult
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				t.Error(err)
				return
			}
			key := string(r.Status)
			if r.Error != nil {
				key = string(r.Error.Code)
			}
			mu.Lock()
			counts[key]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts["sent"] != 3 || counts[string(messages.CodeTooManySends)] != 17 {
		t.Errorf("outcomes = %v, want 3 sent and 17 too_many_sends", counts)
	}
	if n := len(sim.Outbox(phone)); n != 3 {
		t.Errorf("outbox holds %d SMS, want 3", n)
	}
	// Both processes served: the limit was enforced across them, not by one.
	for _, c := range []*child{a, b} {
		stats := microStats(t, nc, c.id)
		workers[c.id] = stats > 0
	}
	for id, served := range workers {
		if !served {
			t.Errorf("worker %s answered no send; the test did not exercise two processes", id)
		}
	}
}

// microStats returns how many send requests the worker with the given
// micro service id answered.
func microStats(t testing.TB, nc *nats.Conn, id string) int {
	t.Helper()
	msg, err := nc.Request("$SRV.STATS."+messages.ServiceName+"."+id, nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Endpoints []struct {
			Name        string `json:"name"`
			NumRequests int    `json:"num_requests"`
		} `json:"endpoints"`
	}
	decodeInto(t, msg.Data, &stats)
	for _, e := range stats.Endpoints {
		if e.Name == "send" {
			return e.NumRequests
		}
	}
	return 0
}
