package idenfytest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
)

// A Server is a Simulator served over HTTP on a loopback port.
type Server struct {
	*Simulator
	URL string // base URL of the vendor API, e.g. http://127.0.0.1:41234

	tb        testing.TB
	http      *httptest.Server
	closeOnce sync.Once
}

// NewServer starts a Simulator configured by opts on 127.0.0.1 (or [::1]) on
// a port of its own, so parallel tests never share one. If tb is not nil, a
// setup failure (invalid options included) fails the test through
// tb.Fatalf and tb.Cleanup closes the server; with a nil tb a setup failure
// panics and the caller must close the server.
func NewServer(tb testing.TB, opts ...Option) *Server {
	if tb != nil {
		tb.Helper()
	}
	sim, err := newSimulator(opts...)
	if err != nil {
		fail(tb, err)
	}
	l, err := listenLoopback()
	if err != nil {
		sim.Close()
		fail(tb, err)
	}
	ts := &httptest.Server{
		Listener: l,
		Config:   &http.Server{Handler: sim, Protocols: ServerProtocols()},
	}
	ts.Start()
	s := &Server{Simulator: sim, URL: ts.URL, tb: tb, http: ts}
	if tb != nil {
		tb.Cleanup(s.Close)
	}
	return s
}

// fail reports a setup failure the way the caller of NewServer asked for.
func fail(tb testing.TB, err error) {
	if tb == nil {
		panic("idenfytest: " + err.Error())
	}
	tb.Helper()
	tb.Fatalf("idenfytest: %v", err)
}

// Client returns the real iDenfy client configured for the server, as
// httptest.Server.Client does: the server's URL and the credentials it
// expects (DefaultAPIKey and DefaultAPISecret unless WithCredentials said
// otherwise), over HTTP/1.1 unless opts add idenfy.WithUnencryptedHTTP2,
// which the server also speaks. opts are applied as idenfy.NewClient
// applies them; invalid ones fail the test as NewServer does.
func (s *Server) Client(opts ...idenfy.Option) *idenfy.Client {
	if s.tb != nil {
		s.tb.Helper()
	}
	c, err := idenfy.NewClient(idenfy.Config{
		BaseURL:   s.URL,
		APIKey:    s.apiKey,
		APISecret: s.apiSecret,
	}, opts...)
	if err != nil {
		fail(s.tb, fmt.Errorf("Client: %w", err))
	}
	return c
}

func listenLoopback() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		return l, nil
	}
	l, err6 := net.Listen("tcp6", "[::1]:0")
	if err6 != nil {
		return nil, fmt.Errorf("failed to listen on a loopback port: %v; %v", err, err6)
	}
	return l, nil
}

// ServerProtocols are the protocols a server of the simulator accepts:
// HTTP/1.1, and HTTP/2 without TLS (prior knowledge), which a client uses to
// keep thousands of calls in flight on a few connections, as it does with
// iDenfy over https.
func ServerProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// Close aborts the vendor calls waiting out a latency fault, shuts the server
// down and waits for the calls in progress to finish. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.Simulator.Close()
		s.http.Close()
	})
}
