package worker

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
)

// TestFleetStateSurvivesARestart: a single NATS server restarting keeps the
// fleet bucket, so that a breaker open before it can close after it, and a
// rate limit still grants turns.
func TestFleetStateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.RunServer(t, &server.Options{Port: -1, JetStream: true, StoreDir: dir})
	nc := natstest.Connect(t, ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, fleetBucketConfig("idenfy_phone", 1))
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(kv, nc, "w", RateLimit{N: 100, Per: time.Second}, Breaker{N: 2, Window: 10 * time.Second}, time.Second,
		systemClock{}, zerolog.New(zerolog.NewTestWriter(t)))
	if err := f.start(ctx); err != nil {
		t.Fatal(err)
	}
	defer f.stop()
	f.report(turn{}, outcomeUnavailable, 0)
	f.report(turn{}, outcomeUnavailable, 0)
	if !f.open() {
		t.Fatal("the breaker did not open after 2 unavailable answers")
	}

	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.RunServer(t, &server.Options{Port: port, JetStream: true, StoreDir: dir})

	// iDenfy is back: the first probe after the restart closes the breaker.
	eventually(t, "a probe to close the breaker after the restart", func() bool {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		tn, err := f.admit(actx, true)
		if err == nil {
			f.report(tn, outcomeSuccess, 0)
		}
		return !f.open()
	})
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := f.admit(actx, true); err != nil {
		t.Errorf("admit after the restart = %v, want a turn of the rate limit", err)
	}
}
