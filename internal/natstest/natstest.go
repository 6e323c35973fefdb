// Package natstest runs embedded NATS servers for tests, in the spirit of
// net/http/httptest: a real server on 127.0.0.1 with a random port and
// JetStream in a temporary directory, shut down by t.Cleanup.
//
//	ns := natstest.RunServer(t, nil)
//	nc := natstest.Connect(t, ns.ClientURL())
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// RunServer starts a server and waits until it takes connections. With nil
// opts it runs JetStream with its store in tb.TempDir(); otherwise opts say
// what the test needs (auth, TLS, a cluster, a fixed port and store to
// restart on) and these are filled in where left empty: Host 127.0.0.1, a
// random port for Port 0, a temporary store for JetStream. Signal handlers
// and logging are always off. A setup failure fails the test.
func RunServer(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	if opts == nil {
		opts = &server.Options{JetStream: true}
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = -1
	}
	if opts.JetStream && opts.StoreDir == "" {
		opts.StoreDir = tb.TempDir()
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	go ns.Start()
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(30 * time.Second) {
		tb.Fatal("natstest: the server takes no connections after 30s")
	}
	return ns
}

// Connect connects to url with opts, closing the connection in
// tb.Cleanup. A failure fails the test.
func Connect(tb testing.TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("natstest: connecting to %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
