package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// env is what one measurement runs against: a fresh NATS server embedded
// in this process (JetStream in a temporary directory) and the simulator
// over loopback HTTP. Every figure of a comparison gets its own env, so that
// none inherits another's stream, buckets or simulator state.
type env struct {
	ns      *server.Server
	dir     string
	natsURL string
	sim     *idenfytest.Simulator
	simSrv  *http.Server
	simURL  string
	nc      *nats.Conn
	js      jetstream.JetStream
	subj    messages.Subjects
}

func newEnv(latency time.Duration) (*env, error) { return newEnvWith(latency, nil) }

// newEnvWith is newEnv with the simulator served through front, when not
// nil: a handler that watches the vendor calls before they are answered.
func newEnvWith(latency time.Duration, front func(http.Handler) http.Handler) (*env, error) {
	e := &env{subj: messages.NewSubjects(messages.DefaultPrefix)}
	var err error
	if e.dir, err = os.MkdirTemp("", "idenfy-bench-*"); err != nil {
		return nil, err
	}
	e.ns, err = server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  e.dir,
		NoSigs:    true,
		NoLog:     true,
		// Thousands of requests in flight from one connection.
		MaxPending: 256 << 20,
	})
	if err != nil {
		e.close()
		return nil, err
	}
	go e.ns.Start()
	if !e.ns.ReadyForConnections(10 * time.Second) {
		e.close()
		return nil, errors.New("embedded NATS not ready")
	}
	e.natsURL = e.ns.ClientURL()

	e.sim = idenfytest.NewSimulator()
	if latency > 0 {
		if err := e.sim.InjectFault(idenfytest.Fault{Latency: latency.String()}); err != nil {
			e.close()
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.close()
		return nil, err
	}
	e.simURL = "http://" + ln.Addr().String()
	var handler http.Handler = e.sim
	if front != nil {
		handler = front(e.sim)
	}
	e.simSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, Protocols: idenfytest.ServerProtocols()}
	go func() { _ = e.simSrv.Serve(ln) }()

	if e.nc, err = nats.Connect(e.natsURL, nats.Name("idenfy-bench")); err != nil {
		e.close()
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.simSrv != nil {
		_ = e.simSrv.Close()
	}
	if e.sim != nil {
		e.sim.Close()
	}
	if e.ns != nil {
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// natsMsgs is how many messages the NATS server has received from its
// clients, and sent to them, so far.
func (e *env) natsMsgs() (in, out int64) {
	v, err := e.ns.Varz(nil)
	if err != nil {
		return 0, 0
	}
	return v.InMsgs, v.OutMsgs
}

// upstream is the number of vendor calls the simulator received.
func (e *env) upstream() int64 {
	s := e.sim.Stats()
	return s.SendSMS + s.VerifySMS
}

// createJobs creates the jobs stream and consumer with the settings the
// worker itself would create, so that a backlog can be published before
// the program under test starts.
func (e *env) createJobs(ctx context.Context, maxAckPending int) error {
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       worker.DefaultStream,
		Subjects:   []string{e.subj.Jobs},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("creating the jobs stream: %w", err)
	}
	_, err := e.js.CreateConsumer(ctx, worker.DefaultStream, jetstream.ConsumerConfig{
		Durable:       worker.DefaultConsumer,
		FilterSubject: e.subj.Jobs,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    20,
		MaxAckPending: maxAckPending,
	})
	return err
}

// workerEnv is the environment of a worker process pointed at e.
func (e *env) workerEnv(concurrency int, metricsAddr string, h2c bool) []string {
	return []string{
		fmt.Sprint("IDENFY_H2C=", h2c),
		"NATS_URL=" + e.natsURL,
		"IDENFY_API_KEY=" + idenfytest.DefaultAPIKey,
		"IDENFY_API_SECRET=" + idenfytest.DefaultAPISecret,
		"IDENFY_BASE_URL=" + e.simURL,
		fmt.Sprint("WORKER_CONCURRENCY=", concurrency),
		// A backlog may wait longer than the default 5 minutes.
		"WORKER_JOB_MAX_AGE=1h",
		// A load test sends codes that nobody verifies, which is what the
		// pumping guard pauses: off unless -worker-env turns it on.
		"WORKER_PUMPING_GUARD=off",
		"METRICS_ADDR=" + metricsAddr,
		"LOG_LEVEL=warn",
	}
}
