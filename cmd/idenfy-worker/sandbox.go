package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// sandboxOptions say where the sandbox listens. A port of -1 (or an address
// with port 0) means a random one; a busy preferred port falls back to a
// random one.
type sandboxOptions struct {
	natsPort    int
	simAddr     string
	metricsAddr string
	logLevel    zerolog.Level
	logs        io.Writer                 // worker logs
	deliveries  func(idenfytest.Delivery) // each SMS or call the simulator makes
	sendLimits  []worker.SendLimit
	pumping     worker.PumpingGuard
}

// sandbox is everything in one process: an embedded NATS server with
// JetStream in a temporary directory, the iDenfy simulator over HTTP, and a
// worker pointed at both.
type sandbox struct {
	ns         *server.Server
	natsURL    string
	sim        *idenfytest.Simulator
	simURL     string
	simSrv     *http.Server
	worker     *worker.Worker
	metricsURL string
	cfg        config
	dir        string

	stop      context.CancelFunc
	done      chan error
	closeOnce sync.Once
}

func startSandbox(opts sandboxOptions) (sb *sandbox, err error) {
	sb = &sandbox{done: make(chan error, 1)}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	if sb.dir, err = os.MkdirTemp("", "idenfy-sandbox-*"); err != nil {
		return nil, err
	}
	if err := sb.startNATS(opts.natsPort); err != nil {
		return nil, err
	}
	if err := sb.startSimulator(opts.simAddr, opts.deliveries); err != nil {
		return nil, err
	}

	metricsAddr := opts.metricsAddr
	if metricsAddr != "" {
		metricsAddr = freeAddr(metricsAddr)
	}
	sb.cfg = config{
		NATSURL:     sb.natsURL,
		APIKey:      idenfytest.DefaultAPIKey,
		APISecret:   idenfytest.DefaultAPISecret,
		HashKey:     []byte("idenfy-worker sandbox hash key"),
		BaseURL:     sb.simURL,
		H2C:         true,
		Timeout:     10 * time.Second,
		Prefix:      messages.DefaultPrefix,
		Stream:      worker.DefaultStream,
		Bucket:      worker.DefaultBucket,
		Replicas:    1,
		Concurrency: worker.DefaultConcurrency,
		RetryMax:    worker.DefaultRetryMaxElapsed,
		JobMaxAge:   worker.DefaultJobMaxAge,
		ResultTTL:   worker.DefaultResultTTL,
		Shutdown:    5 * time.Second,
		SendLimits:  opts.sendLimits,
		// Trying it by hand sends codes nobody verifies, which is what the
		// pumping guard pauses: relaxed like the send limits.
		PumpingGuard: opts.pumping,
		BlockedTypes: worker.DefaultBlockedNumberTypes,
		MetricsAddr:  metricsAddr,
	}
	logs := opts.logs
	if logs == nil {
		logs = io.Discard
	}
	log := newLogger(logs, opts.logLevel, "console")
	connErr := &lastConnError{}
	nc, err := connectNATS(sb.cfg, log, "idenfy-worker sandbox", connErr.record)
	if err != nil {
		return nil, err
	}
	started := make(chan struct{})
	d := deps{log: log, nc: nc, connErr: connErr, registry: newRegistry(), started: func(w *worker.Worker, metricsURL string) {
		sb.worker, sb.metricsURL = w, metricsURL
		close(started)
	}}
	ctx, stop := context.WithCancel(context.Background())
	sb.stop = stop
	go func() {
		defer nc.Close()
		sb.done <- serve(ctx, sb.cfg, d)
	}()
	select {
	case <-started:
		return sb, nil
	case err := <-sb.done:
		sb.done <- err
		return nil, fmt.Errorf("starting the worker: %w", err)
	case <-time.After(30 * time.Second):
		return nil, errors.New("the worker did not start within 30s")
	}
}

func (sb *sandbox) startNATS(port int) error {
	if port > 0 && !portFree("127.0.0.1:"+strconv.Itoa(port)) {
		port = -1
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "idenfy-sandbox",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   sb.dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("embedded NATS did not start within 10s")
	}
	sb.ns = ns
	sb.natsURL = ns.ClientURL()
	return nil
}

func (sb *sandbox) startSimulator(addr string, hook func(idenfytest.Delivery)) error {
	var opts []idenfytest.Option
	if hook != nil {
		opts = append(opts, idenfytest.WithDeliveryHook(hook))
	}
	sb.sim = idenfytest.NewSimulator(opts...)
	ln, err := net.Listen("tcp", freeAddr(addr))
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	sb.simURL = "http://" + ln.Addr().String()
	sb.simSrv = &http.Server{Handler: sb.sim, ReadHeaderTimeout: 5 * time.Second, Protocols: idenfytest.ServerProtocols()}
	go func() { _ = sb.simSrv.Serve(ln) }()
	return nil
}

// Close stops the worker gracefully, then the simulator and NATS, and
// removes the temporary JetStream directory.
func (sb *sandbox) Close() error {
	var err error
	sb.closeOnce.Do(func() {
		if sb.stop != nil {
			sb.stop()
			err = <-sb.done
		}
		if sb.simSrv != nil {
			_ = sb.simSrv.Close()
		}
		if sb.sim != nil {
			sb.sim.Close()
		}
		if sb.ns != nil {
			sb.ns.Shutdown()
			sb.ns.WaitForShutdown()
		}
		if sb.dir != "" {
			_ = os.RemoveAll(sb.dir)
		}
	})
	return err
}

// freeAddr returns addr when it can be listened on, else the same host on a
// random port.
func freeAddr(addr string) string {
	if portFree(addr) {
		return addr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, "0")
}

func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// runSandbox runs the sandbox until interrupted, printing how to use it and
// every SMS or call the simulator makes. Its send limits are off unless
// asked for: trying it by hand sends to one number more often than
// production allows.
func runSandbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	natsPort := fs.Int("nats-port", defaultNATSPort, "port of the embedded NATS server (-1: random)")
	simAddr := fs.String("sim-addr", "127.0.0.1:8089", "address of the iDenfy simulator")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9464", "address of /metrics, /healthz, /readyz (empty: off)")
	logLevel := fs.String("log-level", "info", "worker log level: trace, debug, info, warn or error")
	sendLimits := fs.String("send-limits", "off", "per-number send limits, e.g. 3/10m,10/24h as in production (WORKER_SEND_LIMITS)")
	pumping := fs.String("pumping-guard", "off", "the pumping guard, e.g. 20/1h as in production (WORKER_PUMPING_GUARD)")
	if done, err := parseFlags(fs, summary("sandbox"), args, stdout, stderr); done {
		return err
	}
	// Every bad flag at once, as for the worker's variables.
	var errs []error
	level, ok := logLevels[strings.ToLower(*logLevel)]
	if !ok {
		errs = append(errs, fmt.Errorf("-log-level %q: one of trace, debug, info, warn, error", *logLevel))
	}
	limits, err := worker.ParseSendLimits(*sendLimits)
	if err != nil {
		errs = append(errs, fmt.Errorf("-send-limits: %w", err))
	}
	guard, err := worker.ParsePumpingGuard(*pumping)
	if err != nil {
		errs = append(errs, fmt.Errorf("-pumping-guard: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w\n%w", errUsage, err)
	}
	var mu sync.Mutex
	sb, err := startSandbox(sandboxOptions{
		natsPort:    *natsPort,
		simAddr:     *simAddr,
		metricsAddr: *metricsAddr,
		logLevel:    level,
		logs:        stderr,
		sendLimits:  limits,
		pumping:     guard,
		deliveries: func(d idenfytest.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(stdout, "\n>>> %s to %s  code %s  (request_id %s)\n    %q\n", d.Channel, d.PhoneNumber, d.Code, d.RequestID, d.Text)
		},
	})
	if err != nil {
		return err
	}
	defer sb.Close()

	mu.Lock()
	writeSandboxIntro(stdout, sb, limits, guard)
	mu.Unlock()

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping the sandbox")
	return sb.Close()
}

// defaultNATSPort is where the nats CLI looks without -s.
const defaultNATSPort = 4222

// writeSandboxIntro prints where everything is, the settings that differ
// from production, and commands to paste. The examples use a different
// number each, so that none meets another's send limit or idempotency key.
func writeSandboxIntro(out io.Writer, sb *sandbox, limits []worker.SendLimit, guard worker.PumpingGuard) {
	p := messages.NewSubjects(messages.DefaultPrefix)
	fmt.Fprintf(out, `idenfy-worker sandbox is running. Nothing leaves this machine: iDenfy is simulated.

  NATS          %[1]s
  simulator     %[2]s   (control API under /_sim/)
  metrics       %[3]s

Settings:
  %[4]s
  %[11]s

Try it with the nats CLI (https://github.com/nats-io/natscli):

  %[5]s req %[6]s '{"phone_number":"+12025550163","correlation_id":"signup-42"}'
      -> {"status":"sent","request_id":"...", ...}; the code appears below
  %[5]s req %[7]s '{"request_id":"<request_id>","received_code":"<code>"}'
  %[5]s sub '%[8]s.>'          every outcome, as observers see it
  %[5]s pub %[9]s '{"phone_number":"+12025550164"}' -H 'Nats-Msg-Id: job-1'
  %[5]s micro info %[10]s

The voice-call fallback, without waiting two minutes:
  curl -s -XPOST %[2]s/_sim/clock -d '{"advance":"2m"}'
  curl -s '%[2]s/_sim/outbox?phone_number=%%2B12025550163'

Ctrl-C stops it.
`, sb.natsURL, sb.simURL, orOff(sb.metricsURL), sendLimitsLine(limits), natsCLI(sb.natsURL), p.Send, p.Verify, messages.DefaultPrefix+".results", p.JobsSend, messages.ServiceName, pumpingLine(guard))
}

// natsCLI is the nats CLI command for the server at url: -s only when
// the server is off the port the CLI assumes.
func natsCLI(url string) string {
	if u, err := neturl.Parse(url); err == nil && u.Port() == strconv.Itoa(defaultNATSPort) {
		return "nats"
	}
	return "nats -s " + url
}

// sendLimitsLine says what the sandbox's send limits are and how to change
// them.
func sendLimitsLine(limits []worker.SendLimit) string {
	if len(limits) == 0 {
		return "send limits: off (use -send-limits 3/10m,10/24h for production's)"
	}
	parts := make([]string, len(limits))
	for i, l := range limits {
		parts[i] = l.String()
	}
	return "send limits: " + strings.Join(parts, ",") + " per number (-send-limits off to lift them)"
}

// pumpingLine says what the sandbox's pumping guard is and how to change
// it.
func pumpingLine(g worker.PumpingGuard) string {
	if g.N == 0 {
		return "pumping guard: off (use -pumping-guard " + worker.DefaultPumpingGuard.String() + " for production's)"
	}
	return "pumping guard: " + g.String() + " (-pumping-guard off to lift it)"
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

// natsConnect connects a client of the sandbox (the demo's "service").
func (sb *sandbox) natsConnect() (*nats.Conn, error) {
	return nats.Connect(sb.natsURL, nats.Name("idenfy-worker demo client"))
}
