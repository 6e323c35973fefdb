package idenfytest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// A Server is a Simulator served over HTTP on a loopback port.
type Server struct {
	*Simulator
	URL string // base URL of the vendor API, e.g. http://127.0.0.1:41234

	http      *httptest.Server
	closeOnce sync.Once
}

// NewServer starts a Simulator configured by opts on 127.0.0.1 (or [::1]) on
// a port of its own, so parallel tests never share one. If tb is not nil,
// tb.Cleanup closes the server; otherwise the caller must. Setup failures,
// invalid options included, panic.
func NewServer(tb testing.TB, opts ...Option) *Server {
	if tb != nil {
		tb.Helper()
	}
	sim := NewSimulator(opts...)
	l, err := listenLoopback()
	if err != nil {
		sim.Close()
		panic("idenfytest: " + err.Error())
	}
	ts := &httptest.Server{
		Listener: l,
		Config:   &http.Server{Handler: sim, Protocols: ServerProtocols()},
	}
	ts.Start()
	s := &Server{Simulator: sim, URL: ts.URL, http: ts}
	if tb != nil {
		tb.Cleanup(s.Close)
	}
	return s
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
