package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/worker"
)

// Start-up waits for what a worker container often finds missing at first
// (NATS not up yet, JetStream off, credentials refused) and says why in
// words an operator can act on: in the log at a calm interval, and in the
// body of /readyz until the worker serves.

// Retry intervals of start-up: soon after the first failure or a change of
// cause, then no more often than maxStartInterval.
const (
	firstStartInterval = 500 * time.Millisecond
	maxStartInterval   = 30 * time.Second
	// startTimeout bounds one try of Start. A JetStream request that goes
	// unanswered (a stream's leader just died) is given up on sooner and
	// tried again, which a new leader then answers.
	startTimeout = 5 * time.Second
)

// lastConnError remembers why nats.go's last connection attempt failed:
// with RetryOnFailedConnect the connection starts unconnected, and only its
// ReconnectErrHandler hears why a dial failed.
type lastConnError struct {
	mu  sync.Mutex
	err error
}

// record is a nats.ConnErrHandler.
func (l *lastConnError) record(_ *nats.Conn, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

func (l *lastConnError) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// startup starts a worker and answers /readyz: the reason it does not serve
// yet, then the worker's own readiness.
type startup struct {
	w       *worker.Worker
	nc      *nats.Conn
	urls    string // NATS_URL, redacted
	connErr *lastConnError
	log     zerolog.Logger

	mu      sync.Mutex
	started bool
	reason  error
}

func newStartup(w *worker.Worker, nc *nats.Conn, natsURL string, connErr *lastConnError, log zerolog.Logger) *startup {
	return &startup{w: w, nc: nc, urls: redactURLs(natsURL), connErr: connErr, log: log, reason: errors.New("starting")}
}

// ready is /readyz's answer.
func (s *startup) ready(ctx context.Context) error {
	s.mu.Lock()
	started, reason := s.started, s.reason
	s.mu.Unlock()
	if !started {
		return reason
	}
	return s.w.Ready(ctx)
}

// run starts the worker, retrying what can heal until ctx ends. A new cause
// is retried soon, the same one at a growing interval up to
// maxStartInterval.
func (s *startup) run(ctx context.Context) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(firstStartInterval),
		backoff.WithMaxInterval(maxStartInterval),
		backoff.WithMaxElapsedTime(0),
	), ctx)
	var last string
	op := func() error {
		err := s.attempt(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, worker.ErrInvalidConfig), errors.Is(err, worker.ErrStarted), errors.Is(err, worker.ErrShutDown):
			return backoff.Permanent(err)
		case ctx.Err() != nil:
			// Stopping: the reason to report is the one before.
			return backoff.Permanent(err)
		}
		s.mu.Lock()
		s.reason = err
		s.mu.Unlock()
		if err.Error() != last {
			last = err.Error()
			b.Reset()
		}
		return err
	}
	notify := func(err error, wait time.Duration) {
		s.log.Warn().Str("reason", err.Error()).Str("retry_in", wait.Round(time.Millisecond).String()).Msg("worker cannot start yet")
	}
	if err := backoff.RetryNotify(op, b, notify); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stopped before the worker could start: %w", s.ready(ctx))
		}
		return err
	}
	s.mu.Lock()
	s.started, s.reason = true, nil
	s.mu.Unlock()
	return nil
}

// attempt checks what the worker needs, in order, so that the error names
// the first thing missing, then starts it.
func (s *startup) attempt(ctx context.Context) error {
	if !s.nc.IsConnected() {
		err := s.nc.LastError()
		if err == nil {
			err = s.connErr.get()
		}
		return fmt.Errorf("cannot connect to NATS at %s: %s", s.urls, describeConnError(err, s.nc.Status()))
	}
	actx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	js, err := jetstream.New(s.nc)
	if err != nil {
		return err
	}
	if _, err := js.AccountInfo(actx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return worker.ErrNoJetStream
		}
		return fmt.Errorf("asking NATS at %s for its JetStream account: %w", s.urls, err)
	}
	return s.w.Start(actx)
}

// describeConnError says why a NATS connection failed, in an operator's
// terms.
func describeConnError(err error, status nats.Status) string {
	// nats.go reports a first connection refused as "no servers": only
	// its retries tell why.
	if err == nil || errors.Is(err, nats.ErrNoServers) {
		return "not connected yet (" + strings.ToLower(status.String()) + ")"
	}
	var (
		dnsErr  *net.DNSError
		netErr  net.Error
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		header  tls.RecordHeaderError
	)
	lower := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (is nats-server running, and listening on that port?)"
	case errors.As(err, &dnsErr):
		return "DNS cannot resolve " + dnsErr.Name + " (a typo in NATS_URL, or a network the worker is not on?)"
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		strings.Contains(lower, "authorization violation"), strings.Contains(lower, "authentication"):
		return "authorization refused by the server (" + err.Error() + "): check NATS_CREDS, NATS_NKEY or the user in NATS_URL"
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &header),
		errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted), strings.Contains(lower, "tls"):
		return "TLS failed (" + err.Error() + "): check NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY and the URL's scheme (tls://)"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.As(err, &netErr) && netErr.Timeout():
		return "timed out (a firewall, or the wrong host or port?)"
	}
	return err.Error()
}
