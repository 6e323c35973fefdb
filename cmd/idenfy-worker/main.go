// The idenfy-worker command runs the worker that verifies phone numbers
// through iDenfy for services on NATS.
//
// Usage:
//
//	idenfy-worker                run the worker, configured by the environment
//	idenfy-worker sandbox        run everything in one process to try it by hand:
//	                             embedded NATS, the iDenfy simulator, the worker
//	idenfy-worker demo           the sandbox plus a scripted story; exits 0 only
//	                             if every step behaved
//	idenfy-worker check-config   check the environment without connecting
//	idenfy-worker healthcheck    ask the local worker's /readyz (the image's
//	                             HEALTHCHECK)
//	idenfy-worker version        the version, Go version and VCS revision
//	idenfy-worker help           the commands and every variable, with its
//	                             default
//
// A missing or malformed variable stops start-up (exit 2) with one line for
// each, before any connection.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	environ := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			environ[k] = v
		}
	}
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, environ); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "idenfy-worker:", line)
		}
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for what the operator must fix before a retry can help (a
// bad setting, a bad command line), 1 for the rest.
func exitCode(err error) int {
	var ce *configError
	if errors.As(err, &ce) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

var errUsage = errors.New("usage: idenfy-worker [sandbox | demo | check-config | healthcheck | version | help]")

// run is the whole program, so that tests can start it on random ports.
// environ is the process environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, environ map[string]string) error {
	lookup := func(name string) (string, bool) {
		v, ok := environ[name]
		return v, ok
	}
	if len(args) == 0 {
		return runWorker(ctx, stderr, environ)
	}
	switch args[0] {
	case "sandbox":
		return runSandbox(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "check-config":
		return runCheckConfig(args[1:], stdout, stderr, environ)
	case "healthcheck":
		return runHealthcheck(ctx, args[1:], stdout, stderr, lookup)
	case "version":
		return runVersion(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		writeHelp(stdout)
		return nil
	}
	return fmt.Errorf("%w (unknown command %q; idenfy-worker help lists them)", errUsage, args[0])
}

// runWorker is the production worker: configuration from the environment,
// NATS and iDenfy connections, both intakes, metrics, and a graceful
// shutdown on SIGINT/SIGTERM.
func runWorker(ctx context.Context, stderr io.Writer, environ map[string]string) error {
	cfg, err := loadConfig(func(name string) (string, bool) {
		v, ok := environ[name]
		return v, ok
	})
	warnings := unknownVars(slices.Collect(maps.Keys(environ)))
	if err != nil {
		for _, w := range warnings {
			fmt.Fprintln(stderr, "idenfy-worker: warning:", w)
		}
		return err
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	logConfig(log, cfg)

	connErr := &lastConnError{}
	nc, err := connectNATS(cfg, log, "idenfy-worker", connErr.record)
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	defer nc.Close()
	d := deps{log: log, nc: nc, connErr: connErr, registry: newRegistry()}
	return serve(ctx, cfg, d)
}

// deps are what serve needs beyond the configuration.
type deps struct {
	log      zerolog.Logger
	nc       *nats.Conn
	connErr  *lastConnError // what connectNATS was given
	registry *prometheus.Registry
	// started, when set, receives the worker once it serves.
	started func(*worker.Worker, string)
}

// serve runs a worker until ctx ends, then shuts it down gracefully and
// drains the NATS connection.
func serve(ctx context.Context, cfg config, d deps) error {
	opts := []idenfy.Option{
		idenfy.WithTimeout(cfg.Timeout),
		idenfy.WithMaxConnections(cfg.Concurrency),
		idenfy.WithUserAgent("idenfy-worker/" + worker.Version),
	}
	if cfg.H2C {
		opts = append(opts, idenfy.WithUnencryptedHTTP2())
	}
	client, err := idenfy.NewClient(idenfy.Config{BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, APISecret: cfg.APISecret}, opts...)
	if err != nil {
		return err
	}
	wcfg := cfg.workerConfig()
	wcfg.Conn, wcfg.Client, wcfg.Logger, wcfg.Registerer = d.nc, client, d.log, d.registry
	w, err := worker.New(wcfg)
	if err != nil {
		return err
	}
	st := newStartup(w, d.nc, cfg.NATSURL, d.connErr, d.log)

	metricsURL := ""
	if cfg.MetricsAddr != "" {
		srv, addr, err := serveMetrics(cfg.MetricsAddr, d.registry, st.ready, cfg.Pprof)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		metricsURL = "http://" + addr
		d.log.Info().Str("addr", addr).Msg("serving /metrics, /healthz and /readyz")
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	if err := st.run(ctx); err != nil {
		return err
	}
	if d.started != nil {
		d.started(w, metricsURL)
	}
	<-ctx.Done()

	d.log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown+10*time.Second)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		d.log.Warn().Err(err).Msg("shutdown")
	}
	if err := drain(d.nc, 10*time.Second); err != nil {
		d.log.Warn().Err(err).Msg("draining the NATS connection")
	}
	d.log.Info().Msg("bye")
	return nil
}

// drain drains the connection: pending publishes (results, acks) are
// flushed before it closes.
func drain(nc *nats.Conn, timeout time.Duration) error {
	if nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		return err
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return errors.New("drain timed out")
	}
}

func newLogger(out io.Writer, level zerolog.Level, format string) zerolog.Logger {
	if format == "console" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly, NoColor: !isTerminal(out)}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// isTerminal tells whether out is a terminal: colour codes elsewhere (a
// file, a pipe, docker logs) are noise.
func isTerminal(out io.Writer) bool {
	f, ok := out.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// logConfig logs the effective configuration once, secrets left out.
func logConfig(log zerolog.Logger, c config) {
	countries := "all"
	if len(c.Countries) > 0 {
		countries = strings.Join(c.Countries, ",")
	}
	limits := make([]string, len(c.SendLimits))
	for i, l := range c.SendLimits {
		limits[i] = l.String()
	}
	log.Info().
		Str("nats_url", redactURLs(c.NATSURL)).
		Bool("nats_creds", c.NATSCreds != "").
		Bool("nats_nkey", c.NATSNKey != "").
		Bool("nats_tls", c.NATSTLSCA != "" || c.NATSTLSCert != "").
		Str("idenfy_base_url", c.BaseURL).
		Str("idenfy_api_key", "[redacted]").
		Str("idenfy_api_secret", "[redacted]").
		Str("idenfy_timeout", formatDuration(c.Timeout)).
		Str("subject_prefix", c.Prefix).
		Str("stream", c.Stream).
		Str("kv_bucket", c.Bucket).
		Int("replicas", c.Replicas).
		Int("concurrency", c.Concurrency).
		Str("rate_limit", c.RateLimit.String()).
		Str("breaker", c.Breaker.String()).
		Str("breaker_probe", formatDuration(c.BreakerProbe)).
		Str("retry_max_elapsed", formatDuration(c.RetryMax)).
		Str("job_max_age", formatDuration(c.JobMaxAge)).
		Str("result_ttl", formatDuration(c.ResultTTL)).
		Str("shutdown_timeout", formatDuration(c.Shutdown)).
		Str("allowed_countries", countries).
		Str("send_limits", strings.Join(limits, ",")).
		Str("blocked_number_types", orNone(strings.Join(c.BlockedTypes, ","))).
		Str("pumping_guard", c.PumpingGuard.String()).
		Str("metrics_addr", c.MetricsAddr).
		Msg("configuration")
	if c.ResultTTL < 10*time.Minute {
		log.Warn().Str("result_ttl", formatDuration(c.ResultTTL)).Msg("WORKER_RESULT_TTL is shorter than a code's 10-minute life: a verify asked again late may reach iDenfy and be refused")
	}
	if c.HashKeyDerived {
		log.Warn().Msg("WORKER_HASH_KEY is unset: the hashes kept in JetStream are keyed by the API secret, so rotating IDENFY_API_SECRET resets send counters, verify memory and idempotency; set WORKER_HASH_KEY to keep them")
	}
	if c.ResultTTL < 10*time.Minute {
		log.Warn().Str("result_ttl", formatDuration(c.ResultTTL)).Msg("WORKER_RESULT_TTL is shorter than a code's 10-minute life: a verify asked again late may reach iDenfy and be refused")
	}
}

// redactURLs drops user info (passwords, tokens) from server URLs. It does
// not parse them: an entry may lack its scheme ("user:pass@host:4222", which
// nats.go accepts) or not parse at all, and must be redacted all the same.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		start := 0
		if j := strings.Index(p, "://"); j >= 0 {
			start = j + len("://")
		}
		// The last '@' ends the user info, as in net/url.
		if at := strings.LastIndex(p, "@"); at >= start {
			p = p[:start] + "[redacted]" + p[at:]
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// connectNATS connects with the options of a long-running worker: reconnect
// forever with jitter, buffer publishes while reconnecting, and log every
// change of the connection.
//
// failed, if set, hears every failed attempt to connect: with
// RetryOnFailedConnect the connection starts unconnected and retries in the
// background. A refused authorization is retried too (by default nats.go
// gives up on the second), so that fixing the server's side heals it.
func connectNATS(c config, log zerolog.Logger, name string, failed nats.ConnErrHandler) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.ReconnectBufSize(64 << 20),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(),
		// Inboxes of its own, so that its user's subscribe permission covers
		// no other client's (see "Permissions" in README.md).
		nats.CustomInboxPrefix("_INBOX_idenfy_worker." + c.Prefix),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("NATS connected")
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return
			}
			log.Warn().Err(err).Msg("NATS disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("NATS reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				// Such as a job's Reply-To outside the worker's permissions;
				// the server's text in err names the subject.
				ev.Msg("NATS permissions violation: the server refused a publish or subscription")
				return
			}
			ev.Msg("NATS error")
		}),
	}
	if failed != nil {
		opts = append(opts, nats.ReconnectErrHandler(failed))
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSNKey != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NATSNKey)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	return nats.Connect(c.NATSURL, opts...)
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics, /healthz (the process is alive) and /readyz
// (ready: the worker serves, connected, subscribed, its store reachable;
// else 503 with the reason), and with
// pprof the Go profiler under /debug/pprof/.
func serveMetrics(addr string, reg *prometheus.Registry, ready func(context.Context) error, pprof bool) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if pprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(rw, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String(), nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
