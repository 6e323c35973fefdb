//go:build unix

package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/internal/proctest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

func TestMain(m *testing.M) { proctest.Main(m) }

const (
	// resultsStream is the default name of the stream that keeps every
	// result event.
	resultsStream = "IDENFY_PHONE_RESULTS"
	// startLimit bounds the waits for processes to serve; recoveryLimit
	// the wait, from the kills, for every job to have its result. They only
	// guard against a hang: nothing here depends on how long things take.
	startLimit    = 60 * time.Second
	recoveryLimit = 90 * time.Second
	opLimit       = 5 * time.Second // one JetStream API call
)

// Two worker processes share a three-node cluster with replicas 3. In the
// middle of a batch of send jobs, the server leading the jobs stream and
// one worker are killed with SIGKILL, then both restarted. Every job still
// ends with exactly one outcome in the results stream, the jobs stream
// ends empty, and iDenfy was asked to text at most the dead worker's
// unfinished calls more than once.
func TestKillServerAndWorkerMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server and idenfy-worker processes")
	}
	const batch, concurrency = 300, 16
	workerBin := proctest.WorkerBinary(t)
	cluster := proctest.StartCluster(t, 3)
	// A latency keeps the calls in flight long enough for the kills to
	// find some.
	sim := idenfytest.NewServer(t)
	if err := sim.InjectFault(idenfytest.Fault{Latency: "75ms"}); err != nil {
		t.Fatal(err)
	}
	subj := messages.NewSubjects(messages.DefaultPrefix)
	nc := natstest.Connect(t, cluster.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	env := workerEnv(cluster.URLs(), sim.URL, concurrency)
	workers := make([]*workerProc, 2)
	for i := range workers {
		workers[i] = startWorker(t, workerBin, fmt.Sprintf("worker-%d", i+1), env)
	}
	for _, w := range workers {
		w.waitReady(t)
	}
	checkResultsStream(t, js, subj)

	var victimName string
	proctest.WaitFor(t, startLimit, "the jobs stream to have a leader", func() bool {
		victimName = leaderOf(js, worker.DefaultStream, "")
		return victimName != ""
	})
	victim := cluster.Node(victimName)
	if victim == nil {
		t.Fatalf("the jobs stream is led by %q, which is no node of the cluster", victimName)
	}
	t.Logf("%s leads %s", victimName, strings.Join(rolesOf(js, victimName), ", "))

	// A live count, only to know when the batch is a third done; the
	// check reads the results stream.
	var live atomic.Int64
	sub, err := nc.Subscribe(subj.Results, func(*nats.Msg) { live.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	warmups := warmUp(t, js, subj, workers)
	jobs := warmups + batch
	publishJobs(t, js, subj, warmups, jobs)
	proctest.WaitFor(t, startLimit, "a third of the jobs to have results", func() bool { return live.Load() >= int64(jobs/3) })
	_ = sub.Unsubscribe()

	for _, w := range workers {
		t.Logf("%s: %s", w.Name(), w.load())
	}
	killed := busiest(workers)
	killed.Kill()
	victim.Kill()
	killedAt := time.Now()
	sendsAtKill := sim.Stats().SendSMS
	t.Logf("killed %s and %s after %d results, %d sends upstream", killed.Name(), victimName, live.Load(), sendsAtKill)
	victim.Restart()
	killed.Restart()
	victim.WaitHealthy(t)
	t.Logf("%s healthy again after %v", victimName, time.Since(killedAt).Round(time.Millisecond))
	killed.waitReady(t)
	t.Logf("%s ready again after %v", killed.Name(), time.Since(killedAt).Round(time.Millisecond))

	deadline := killedAt.Add(recoveryLimit)
	proctest.WaitFor(t, time.Until(deadline), "the jobs stream to be empty, nothing pending or unacked", func() bool {
		return jobsSettled(js)
	})
	var byID map[string][]messages.SendResult
	proctest.Await(t, time.Until(deadline), "every job to have a result in "+resultsStream, func() error {
		var err error
		if byID, err = readResults(js); err != nil {
			return err
		}
		if ids := missing(byID, jobs); len(ids) > 0 {
			return fmt.Errorf("%d jobs have none: %s", len(ids), strings.Join(ids, " "))
		}
		return nil
	})
	recovered := time.Since(killedAt)

	events, flagged := 0, 0
	for i := range jobs {
		id := correlationID(i)
		rs := byID[id]
		first := rs[0]
		if first.Status != messages.StatusSent || first.RequestID == "" {
			t.Errorf("%s: result = %+v, want sent with a request_id", id, first)
		}
		for _, r := range rs[1:] {
			if r.Status != first.Status || r.RequestID != first.RequestID {
				t.Errorf("%s: results %+v and %+v differ: one job, two outcomes", id, first, r)
			}
		}
		events += len(rs)
		if first.PossibleDuplicate {
			flagged++
		}
	}
	if unknown := len(byID) - jobs; unknown > 0 {
		t.Errorf("%d results for correlation_ids of no job", unknown)
	}
	sends := int(sim.Stats().SendSMS)
	t.Logf("%d jobs (%d to warm up): %d sends upstream (%d extra), %d result events (%d republished), %d results flagged possible_duplicate; every job had its result %v after the kills",
		jobs, warmups, sends, sends-jobs, events, events-jobs, flagged, recovered.Round(time.Millisecond))
	// A send is made again only for a key whose claim was taken over:
	// one the killed worker held, its call made or in flight, its outcome
	// not stored. Its admission bounds those at 2*concurrency (at most
	// concurrency of them in a call, the rest storing an outcome). The
	// killed server adds none: outcomes are stored with retries for 30s,
	// and the replicas keep the idempotency bucket through the loss.
	if limit := jobs + 2*concurrency; sends < jobs || sends > limit {
		t.Errorf("iDenfy got %d sends for %d jobs, want between %d and %d", sends, jobs, jobs, limit)
	}
}

// checkResultsStream checks that the workers made the results stream as
// README's "Results for observers" says: R3 here, like everything else.
// Whichever server leads it may be the one killed: results are stored with
// their acks awaited, and a job is acked only once its result is.
func checkResultsStream(t *testing.T, js jetstream.JetStream, subj messages.Subjects) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opLimit)
	defer cancel()
	s, err := js.Stream(ctx, resultsStream)
	if err != nil {
		t.Fatalf("the workers made no results stream: %v", err)
	}
	cfg := s.CachedInfo().Config
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != subj.Results || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.Storage != jetstream.FileStorage || cfg.Replicas != 3 || cfg.MaxAge != 24*time.Hour {
		t.Fatalf("results stream = %+v, want subjects %s, limits, file storage, R3, max age 24h", cfg, subj.Results)
	}
}

// workerProc is an idenfy-worker process and the address of its /readyz.
type workerProc struct {
	*proctest.Process
	metrics string
}

// workerEnv is a worker's whole environment: every server of the cluster,
// replicas 3, the simulator, no send limits nor pumping guard (the jobs'
// numbers share ranges, and none is ever verified), and warnings only in
// the log.
func workerEnv(natsURLs, idenfyURL string, concurrency int) []string {
	return []string{
		"NATS_URL=" + natsURLs,
		"WORKER_REPLICAS=3",
		"IDENFY_BASE_URL=" + idenfyURL,
		"IDENFY_API_KEY=" + idenfytest.DefaultAPIKey,
		"IDENFY_API_SECRET=" + idenfytest.DefaultAPISecret,
		"WORKER_HASH_KEY=chaos-test-hash-key-of-the-fleet",
		"WORKER_SEND_LIMITS=off",
		"WORKER_PUMPING_GUARD=off",
		fmt.Sprint("WORKER_CONCURRENCY=", concurrency),
		"LOG_LEVEL=warn",
	}
}

// startWorker starts a worker on a metrics port of its own, kept across
// restarts.
func startWorker(t *testing.T, bin, name string, env []string) *workerProc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.FreePorts(t, 1)[0])
	p := proctest.Start(t, proctest.Command{Name: name, Path: bin, Env: slices.Concat(env, []string{"METRICS_ADDR=" + addr})})
	return &workerProc{Process: p, metrics: addr}
}

var metricsClient = &http.Client{Timeout: 2 * time.Second}

// metric is the sum of the samples of a metric (all its label sets) on
// the worker's /metrics.
func (w *workerProc) metric(name string) (float64, error) {
	resp, err := metricsClient.Get("http://" + w.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		sample, value, ok := strings.Cut(line, " ")
		if !ok || (sample != name && !strings.HasPrefix(sample, name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", w.Name(), line, err)
		}
		sum += v
	}
	return sum, nil
}

// load says, for the log, what the worker is doing.
func (w *workerProc) load() string {
	calls, err1 := w.metric("idenfy_worker_upstream_in_flight")
	tasks, err2 := w.metric("idenfy_worker_in_flight")
	done, err3 := w.metric("idenfy_worker_outcomes_total")
	if err := errors.Join(err1, err2, err3); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%v calls to iDenfy in flight, %v tasks admitted, %v outcomes so far", calls, tasks, done)
}

// busiest is the worker with the most calls to iDenfy in flight: the one
// whose death leaves the most claims to take over.
func busiest(workers []*workerProc) *workerProc {
	best, most := workers[0], -1.0
	for _, w := range workers {
		if n, err := w.metric("idenfy_worker_upstream_in_flight"); err == nil && n > most {
			best, most = w, n
		}
	}
	return best
}

// waitReady waits until the worker's /readyz answers 200: it is connected
// and consuming.
func (w *workerProc) waitReady(t *testing.T) {
	t.Helper()
	proctest.WaitFor(t, startLimit, w.Name()+" to be ready", func() bool {
		if !w.Running() {
			t.Fatalf("%s exited before it was ready", w.Name())
		}
		resp, err := metricsClient.Get("http://" + w.metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func correlationID(i int) string { return fmt.Sprint("chaos-", i) }

// warmUp publishes jobs one at a time until every worker has taken one,
// and returns how many it published. A worker's first pull on a consumer
// just created can go unanswered while the consumer's leader is elected;
// it pulls again only once it misses the heartbeats, 10s later, and until
// then the other worker would take the whole batch alone.
func warmUp(t *testing.T, js jetstream.JetStream, subj messages.Subjects, workers []*workerProc) int {
	t.Helper()
	n, start := 0, time.Now()
	proctest.Await(t, startLimit, "every worker to take a job", func() error {
		var idle []string
		for _, w := range workers {
			if done, err := w.metric("idenfy_worker_outcomes_total"); err != nil || done == 0 {
				idle = append(idle, w.Name())
			}
		}
		if len(idle) == 0 {
			return nil
		}
		// A job every 250ms is enough to find the idle worker when it
		// comes.
		if n < int(time.Since(start)/(250*time.Millisecond))+1 {
			publishJobs(t, js, subj, n, n+1)
			n++
		}
		return fmt.Errorf("%s took none of %d jobs", strings.Join(idle, " and "), n)
	})
	return n
}

// publishJobs publishes the send jobs from to to (excluded), each with its
// own Nats-Msg-Id, correlation_id and phone number.
func publishJobs(t *testing.T, js jetstream.JetStream, subj messages.Subjects, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		data, err := json.Marshal(messages.SendRequest{
			PhoneNumber:   fmt.Sprintf("+1202555%04d", i),
			CorrelationID: correlationID(i),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishAsync(subj.JobsSend, data, jetstream.WithMsgID(fmt.Sprint("chaos-job-", i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(startLimit):
		t.Fatalf("publishing %d jobs took over %v", to-from, startLimit)
	}
}

// leaderOf is the name of the server leading a stream (or, with a
// consumer name, that consumer), "" while there is none or it cannot be
// asked.
func leaderOf(js jetstream.JetStream, stream, consumer string) string {
	ctx, cancel := context.WithTimeout(context.Background(), opLimit)
	defer cancel()
	var cluster *jetstream.ClusterInfo
	if consumer != "" {
		c, err := js.Consumer(ctx, stream, consumer)
		if err != nil {
			return ""
		}
		cluster = c.CachedInfo().Cluster
	} else {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return ""
		}
		cluster = s.CachedInfo().Cluster
	}
	if cluster == nil {
		return ""
	}
	return cluster.Leader
}

// rolesOf names what server leads among the worker's streams, consumer
// and buckets, for the log: what its loss takes away.
func rolesOf(js jetstream.JetStream, server string) []string {
	var roles []string
	for _, r := range []struct{ name, stream, consumer string }{
		{"the jobs stream", worker.DefaultStream, ""},
		{"the jobs consumer", worker.DefaultStream, worker.DefaultConsumer},
		{"bucket " + worker.DefaultBucket, "KV_" + worker.DefaultBucket, ""},
	} {
		if leaderOf(js, r.stream, r.consumer) == server {
			roles = append(roles, r.name)
		}
	}
	return roles
}

// jobsSettled reports whether the jobs stream is empty and its consumer
// has nothing pending or unacknowledged.
func jobsSettled(js jetstream.JetStream) bool {
	ctx, cancel := context.WithTimeout(context.Background(), opLimit)
	defer cancel()
	s, err := js.Stream(ctx, worker.DefaultStream)
	if err != nil || s.CachedInfo().State.Msgs != 0 {
		return false
	}
	c, err := js.Consumer(ctx, worker.DefaultStream, worker.DefaultConsumer)
	if err != nil {
		return false
	}
	info := c.CachedInfo()
	return info.NumPending == 0 && info.NumAckPending == 0
}

// readResults reads the whole results stream, by correlation_id, with an
// ordered consumer: the durable record, whoever was listening meanwhile.
func readResults(js jetstream.JetStream) (map[string][]messages.SendResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, resultsStream)
	if err != nil {
		return nil, err
	}
	total := s.CachedInfo().State.Msgs
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	// One iterator over one consumer: the consumer's own Next would make
	// a consumer afresh for every message.
	iter, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer iter.Stop()
	out := make(map[string][]messages.SendResult)
	for n := uint64(0); n < total; n++ {
		msg, err := iter.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("result %d of %d: %w", n+1, total, err)
		}
		var r messages.SendResult
		if err := json.Unmarshal(msg.Data(), &r); err != nil {
			return nil, fmt.Errorf("result %d of %d on %s: %w", n+1, total, msg.Subject(), err)
		}
		out[r.CorrelationID] = append(out[r.CorrelationID], r)
	}
	return out, nil
}

// missing lists the jobs without a result.
func missing(byID map[string][]messages.SendResult, jobs int) []string {
	var ids []string
	for i := range jobs {
		if id := correlationID(i); len(byID[id]) == 0 {
			ids = append(ids, id)
		}
	}
	return ids
}
