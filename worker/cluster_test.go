package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// Past one machine: a three-node NATS cluster, replicas 3, and a node lost
// in the middle of a batch.

// freePorts returns n 127.0.0.1 ports that were free a moment ago. Routes
// name each other's cluster ports before the servers start, so these cannot
// be chosen by the servers themselves.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close() // held until all are picked: no port twice
	}
	return ports
}

// startCluster starts n embedded NATS servers routed into one cluster, each
// with JetStream in its own directory, and waits until JetStream has a meta
// leader that sees every peer. Each is shut down by t.Cleanup.
func startCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	ports := freePorts(t, n)
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	servers := make([]*server.Server, n)
	for i := range servers {
		servers[i] = natstest.RunServer(t, &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			JetStream:  true,
			Cluster: server.ClusterOpts{
				Name: "idenfy-test",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		})
	}
	waitFor(t, "a JetStream meta leader that sees every peer, and every peer current", func() bool {
		leader := false
		for _, ns := range servers {
			if !ns.JetStreamIsCurrent() {
				return false
			}
			leader = leader || (ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) == n)
		}
		return leader
	})
	return servers
}

func clientURLs(servers []*server.Server) string {
	urls := make([]string, len(servers))
	for i, ns := range servers {
		urls[i] = ns.ClientURL()
	}
	return strings.Join(urls, ",")
}

// streamLeader is the name of the server leading a stream (or, with a
// consumer name, that consumer), "" while there is none.
func streamLeader(js jetstream.JetStream, stream, consumer string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if consumer != "" {
		c, err := js.Consumer(ctx, stream, consumer)
		if err != nil || c.CachedInfo().Cluster == nil {
			return ""
		}
		return c.CachedInfo().Cluster.Leader
	}
	s, err := js.Stream(ctx, stream)
	if err != nil || s.CachedInfo().Cluster == nil {
		return ""
	}
	return s.CachedInfo().Cluster.Leader
}

// createStream creates a stream, asking again while a young cluster answers
// nothing (its meta leader may still change hands). Creating a stream that
// exists with the same configuration succeeds.
func createStream(t testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	var s jetstream.Stream
	waitFor(t, "stream "+cfg.Name+" to be created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		s, err = js.CreateStream(ctx, cfg)
		return err == nil
	})
	return s
}

// moveLeader has stream's leader step down until a server other than avoid
// leads it.
func moveLeader(t testing.TB, nc *nats.Conn, js jetstream.JetStream, stream, avoid string) {
	t.Helper()
	waitFor(t, stream+" to be led by another server than "+avoid, func() bool {
		switch streamLeader(js, stream, "") {
		case "":
			return false
		case avoid:
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
			return false
		}
		return true
	})
}

// A worker with replicas 3 in a three-node cluster loses no job when the
// node leading its jobs consumer dies in the middle of a batch: what that
// node led (the consumer, and as it happens the jobs stream, a KV bucket or
// the meta layer; the test logs which) fails over to the other two, and
// every job completes. The worker's own connection is to a survivor: a
// worker whose server goes away is TestNATSRestartMidBatch's subject.
func TestClusterNodeLossMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node NATS cluster")
	}
	const jobs = 200
	servers := startCluster(t, 3)
	sim := idenfytest.NewServer(t)
	if err := sim.InjectFault(idenfytest.Fault{Latency: "50ms"}); err != nil {
		t.Fatal(err)
	}
	subj := messages.NewSubjects(messages.DefaultPrefix)
	reconnect := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	nc := natstest.Connect(t, clientURLs(servers), reconnect...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// The results stream as an operator may create it: R3, like
	// everything else.
	createStream(t, js, jetstream.StreamConfig{
		Name:       worker.DefaultResultsStream,
		Subjects:   []string{subj.Results},
		Storage:    jetstream.FileStorage,
		Replicas:   3,
		Duplicates: 10 * time.Minute,
	})
	// The jobs stream and consumer as an operator may create them: R3, and
	// a short ack wait, so that a job whose ack died with the node comes
	// back within seconds rather than 30s.
	jobStream := createStream(t, js, jetstream.StreamConfig{
		Name:      worker.DefaultStream,
		Subjects:  []string{subj.Jobs},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  3,
	})
	waitFor(t, "the jobs consumer to be created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateConsumer(ctx, worker.DefaultStream, jetstream.ConsumerConfig{
			Durable:       worker.DefaultConsumer,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       2 * time.Second,
			MaxDeliver:    50,
			MaxAckPending: 10000,
		})
		return err == nil
	})

	// The node to lose: the one that leads the jobs consumer, where the
	// worker's pulls and acks go. The results are published with core NATS
	// (at most once) and only captured here to check the outcome: their
	// stream is led elsewhere, and the worker connects elsewhere first, so
	// that the check does not hinge on a capture lost in transit.
	var victimName string
	waitFor(t, "the jobs consumer to have a leader", func() bool {
		victimName = streamLeader(js, worker.DefaultStream, worker.DefaultConsumer)
		return victimName != ""
	})
	moveLeader(t, nc, js, worker.DefaultResultsStream, victimName)
	var victim *server.Server
	others := make([]*server.Server, 0, 2)
	for _, ns := range servers {
		if ns.Name() == victimName {
			victim = ns
		} else {
			others = append(others, ns)
		}
	}
	if victim == nil {
		t.Fatalf("no server is named %q", victimName)
	}

	publishJobs(t, js, subj, jobs)

	client := sim.Client(idenfy.WithTimeout(2 * time.Second))
	// Every server in its list, the victim last and tried in order: as a
	// worker is configured, NATS_URL=nats://n1:4222,nats://n2:4222,...
	workerConn := natstest.Connect(t, clientURLs(append(others, victim)), append(reconnect, nats.DontRandomize())...)
	logs := &syncBuffer{}
	w, err := worker.New(worker.Config{
		Conn:            workerConn,
		Client:          client,
		HashKey:         testHashKey,
		Logger:          zerolog.New(logs).Level(zerolog.DebugLevel),
		Replicas:        3,
		Concurrency:     16,
		SendLimits:      worker.DefaultSendLimits, // counted in an R3 bucket too
		ShutdownTimeout: 5 * time.Second,
	}, worker.WithLease(2*time.Second), worker.WithJobRetryDelay(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// Started as cmd/idenfy-worker does: again while the cluster is not
	// ready for the buckets yet.
	waitFor(t, "the worker to start", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := w.Start(ctx)
		if err != nil {
			t.Logf("worker.Start: %v", err)
		}
		return err == nil
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs)
		}
	})

	// The worker created its buckets with three replicas.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, bucket := range []string{worker.DefaultBucket, worker.DefaultBucket + "_limits"} {
		s, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatalf("the worker's bucket %s: %v", bucket, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("bucket %s has %d replicas, want 3", bucket, r)
		}
	}

	waitFor(t, "the batch to be under way", func() bool { return sim.Stats().SendSMS >= jobs/3 })
	roles := []string{"the jobs consumer"}
	if streamLeader(js, worker.DefaultStream, "") == victimName {
		roles = append(roles, "the jobs stream")
	}
	for _, bucket := range []string{worker.DefaultBucket, worker.DefaultBucket + "_limits"} {
		if streamLeader(js, "KV_"+bucket, "") == victimName {
			roles = append(roles, "bucket "+bucket)
		}
	}
	if victim.JetStreamIsLeader() {
		roles = append(roles, "the JetStream meta layer")
	}
	victim.Shutdown()
	victim.WaitForShutdown()
	t.Logf("stopped %s, leader of %s, after %d of %d sends", victimName, strings.Join(roles, ", "), sim.Stats().SendSMS, jobs)

	// Read on a connection to the survivors, retrying while the cluster
	// settles (a JetStream API request may find no leader for a moment).
	// A job is acked only after its result is published: once the stream
	// is empty, every result was published.
	survivor := natstest.Connect(t, clientURLs(others), reconnect...)
	sjs, err := jetstream.New(survivor)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every job to be acked", func() bool { return streamMsgs(t, jobStream) == 0 })
	waitFor(t, "a result for every job to be captured", func() bool {
		s, err := sjs.Stream(context.Background(), worker.DefaultResultsStream)
		return err == nil && s.CachedInfo().State.Msgs >= jobs
	})
	byID := readResults(t, sjs, worker.DefaultResultsStream)
	for i := range jobs {
		rs := byID[fmt.Sprint("job-", i)]
		if len(rs) == 0 {
			t.Errorf("job %d has no result", i)
		}
		for _, r := range rs {
			if r.Status != messages.StatusSent || r.RequestID == "" {
				t.Errorf("job %d result = %+v, want sent", i, r)
			}
		}
	}
	if extra := slices.DeleteFunc(slices.Collect(maps.Keys(byID)), func(id string) bool { return strings.HasPrefix(id, "job-") }); len(extra) > 0 {
		t.Errorf("results for unknown jobs %q", extra)
	}
	sends := sim.Stats().SendSMS
	t.Logf("%d jobs, %d sends upstream, %d results", jobs, sends, len(byID))
	if sends < jobs {
		t.Errorf("iDenfy got %d sends for %d jobs", sends, jobs)
	}

	// The cluster still serves requests with a node down.
	res := requestSend(t, nc, subj, "+447700900123")
	if res.Status != messages.StatusSent {
		t.Errorf("send with a node down = %+v, want sent", res)
	}
}

// readResults reads every result captured in stream, by correlation_id,
// retrying each read while the cluster settles.
func readResults(t testing.TB, js jetstream.JetStream, stream string) map[string][]messages.SendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		s    jetstream.Stream
		info *jetstream.StreamInfo
	)
	waitFor(t, "the state of stream "+stream, func() bool {
		var err error
		if s, err = js.Stream(ctx, stream); err != nil {
			return false
		}
		info = s.CachedInfo()
		return true
	})
	out := make(map[string][]messages.SendResult)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		var msg *jetstream.RawStreamMsg
		waitFor(t, fmt.Sprintf("message %d of stream %s", seq, stream), func() bool {
			var err error
			msg, err = s.GetMsg(ctx, seq)
			return err == nil || errors.Is(err, jetstream.ErrMsgNotFound)
		})
		if msg == nil {
			continue
		}
		var r messages.SendResult
		decodeInto(t, msg.Data, &r)
		out[r.CorrelationID] = append(out[r.CorrelationID], r)
	}
	return out
}

func requestSend(t testing.TB, nc *nats.Conn, subj messages.Subjects, phone string) messages.SendResult {
	t.Helper()
	data, err := json.Marshal(messages.SendRequest{PhoneNumber: phone, CorrelationID: "after-the-loss"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subj.Send, data, 30*time.Second)
	if err != nil {
		t.Fatalf("request on %s: %v", subj.Send, err)
	}
	var res messages.SendResult
	decodeInto(t, msg.Data, &res)
	return res
}
