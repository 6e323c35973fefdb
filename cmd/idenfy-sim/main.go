// The idenfy-sim command runs the iDenfy phone verification simulator
// (package idenfy/idenfytest) as a standalone HTTP server: the vendor API
// (POST /fraud/send-sms, POST /fraud/verify-sms) behind HTTP basic auth, and
// the /_sim/ control API (outbox, clock, faults, stats) without auth. Its
// clock is the wall clock plus whatever POST /_sim/clock added.
//
// It is a sandbox: every SMS and call it "delivers" is logged to stderr with
// the full phone number and code, so a person can type the code in.
//
//	idenfy-sim -addr 127.0.0.1:8089 -api-key sandbox-key -api-secret sandbox-secret
//	curl -u sandbox-key:sandbox-secret -d '{"phone_number": "+12025550163"}' http://127.0.0.1:8089/fraud/send-sms
//	curl 'http://127.0.0.1:8089/_sim/outbox?phone_number=+12025550163'
//	curl -d '{"advance": "2m"}' http://127.0.0.1:8089/_sim/clock
//
// It stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

// shutdownTimeout bounds how long calls in progress may take to finish on
// shutdown (a latency fault may hold them).
const shutdownTimeout = 5 * time.Second

// errUsage reports bad command-line arguments, already explained on stderr.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "idenfy-sim:", err)
		os.Exit(1)
	}
}

type config struct {
	addr        string
	apiKey      string
	apiSecret   string
	maxAttempts int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("idenfy-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8089", "listen on `host:port`")
	fs.StringVar(&c.apiKey, "api-key", idenfytest.DefaultAPIKey, "API key that basic auth must present (username)")
	fs.StringVar(&c.apiSecret, "api-secret", idenfytest.DefaultAPISecret, "API secret that basic auth must present (password)")
	fs.IntVar(&c.maxAttempts, "max-attempts", idenfytest.DefaultMaxAttempts, "wrong codes after which a request_id never verifies")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "idenfy-sim: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return c, errUsage
	case c.apiKey == "" || c.apiSecret == "":
		return c, errors.New("-api-key and -api-secret must not be empty")
	case c.maxAttempts < 1:
		return c, fmt.Errorf("-max-attempts %d: must be at least 1", c.maxAttempts)
	}
	return c, nil
}

// run serves the simulator until ctx is done. It prints the address it
// listens on, so that tests can use -addr 127.0.0.1:0.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	sim := idenfytest.NewSimulator(
		idenfytest.WithCredentials(c.apiKey, c.apiSecret),
		idenfytest.WithMaxAttempts(c.maxAttempts),
		idenfytest.WithDeliveryHook(func(d idenfytest.Delivery) { logDelivery(stderr, d) }),
	)
	defer sim.Close()
	// No ReadTimeout: its deadline would cancel the context of a call that
	// waits out a long latency fault, dropping it early.
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(stderr, "idenfy-sim: ", 0),
		Protocols:         idenfytest.ServerProtocols(),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	fmt.Fprintf(stderr, "idenfy-sim listening on http://%s\n", l.Addr())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintf(stderr, "idenfy-sim: calls still in progress after %v, closing their connections\n", shutdownTimeout)
		srv.Close()
	}
	<-served
	fmt.Fprintln(stderr, "idenfy-sim stopped")
	return nil
}

// logDelivery writes one line per SMS or call, code included: this is a
// sandbox, and the person at the terminal is the phone's owner.
func logDelivery(w io.Writer, d idenfytest.Delivery) {
	fmt.Fprintf(w, "%s  %-4s  %s  code %s  request %s  %q\n",
		d.At.Format(time.TimeOnly), d.Channel, d.PhoneNumber, d.Code, d.RequestID, d.Text)
}
