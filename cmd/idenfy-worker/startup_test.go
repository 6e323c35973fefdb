package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// waitFor polls until cond holds.
func waitFor(t *testing.T, what string, cond func() bool, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s; logs:\n%s", what, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReadyzSays polls /readyz until it answers 503 with want in its body.
func waitReadyzSays(t *testing.T, w *runningWorker, want string) {
	t.Helper()
	var status int
	var body string
	waitFor(t, fmt.Sprintf("/readyz 503 saying %q (last: %d %q)", want, status, body), func() bool {
		status, body = get(w.metrics + "/readyz")
		return status == http.StatusServiceUnavailable && strings.Contains(body, want)
	}, w.logs)
}

// TestWorkerStartupReasons follows an operator's first hour: NATS not
// running, then running without JetStream, then fixed. Each time the log
// and /readyz say why the worker does not serve, and it serves by itself
// once the cause is gone.
func TestWorkerStartupReasons(t *testing.T) {
	t.Parallel()
	natsAddr := freeLocalAddr(t)
	_, portStr, _ := net.SplitHostPort(natsAddr)
	port, _ := strconv.Atoi(portStr)
	sim := idenfytest.NewServer(t, idenfytest.WithCredentials(testAPIKey, testAPISecret))
	const natsPassword = "NATSPW-q3Zp0e-do-not-print"
	w := startWorker(t, workerEnv("nats://ops:"+natsPassword+"@"+natsAddr, sim.URL))
	url := "nats://[redacted]@" + natsAddr

	// Nothing listens on the port.
	waitFor(t, "logging the URL and connection refused", func() bool {
		for _, line := range strings.Split(w.logs.String(), "\n") {
			if strings.Contains(line, "worker cannot start yet") && strings.Contains(line, url) && strings.Contains(line, "connection refused") {
				return true
			}
		}
		return false
	}, w.logs)
	waitReadyzSays(t, w, "connection refused")
	waitReadyzSays(t, w, url)

	// A server without JetStream.
	plain := natstest.RunServer(t, &server.Options{Port: port})
	waitFor(t, "logging that JetStream is off", func() bool {
		return strings.Contains(w.logs.String(), worker.ErrNoJetStream.Error())
	}, w.logs)
	waitReadyzSays(t, w, worker.ErrNoJetStream.Error())

	// Restarted with JetStream: the worker serves without being touched.
	plain.Shutdown()
	plain.WaitForShutdown()
	startNATS(t, port, t.TempDir())
	waitStatus(t, w.metrics+"/readyz", http.StatusOK)
	if err := w.stop(t); err != nil {
		t.Fatalf("run after SIGTERM = %v, want nil", err)
	}
	if strings.Contains(w.logs.String(), natsPassword) {
		t.Errorf("the logs hold the NATS password:\n%s", w.logs.String())
	}
	if strings.Contains(w.logs.String(), `"retry_in":`) && !strings.Contains(w.logs.String(), `"retry_in":"`) {
		t.Errorf("retry_in is not a duration string:\n%s", w.logs.String())
	}
}

func TestDescribeConnError(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"none yet", nil, "not connected yet (reconnecting)"},
		{"refused", refused, "connection refused"},
		{"DNS", &net.DNSError{Err: "no such host", Name: "natz", IsNotFound: true}, "DNS cannot resolve natz"},
		{"timeout", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, "timed out"},
		{"authorization", nats.ErrAuthorization, "authorization refused"},
		{"authorization from the server", errors.New("nats: 'Authorization Violation'"), "authorization refused"},
		{"unknown CA", fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), "TLS failed"},
		{"TLS required", nats.ErrSecureConnRequired, "TLS failed"},
		{"no servers", nats.ErrNoServers, "not connected yet (reconnecting)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describeConnError(tt.err, nats.RECONNECTING); !strings.Contains(got, tt.want) {
				t.Errorf("describeConnError(%v) = %q, want it to say %q", tt.err, got, tt.want)
			}
		})
	}
}
