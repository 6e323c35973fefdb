package worker_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// A test that kills or restarts a worker runs it as a separate process: the
// test binary itself, started with childEnv set, becomes a worker instead of
// running tests.
const childEnv = "IDENFY_WORKER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs a worker configured by the CHILD_* variables until SIGTERM.
func runChild() error {
	nc, err := nats.Connect(os.Getenv("CHILD_NATS_URL"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := idenfy.NewClient(idenfy.Config{
		BaseURL:   os.Getenv("CHILD_IDENFY_URL"),
		APIKey:    idenfytest.DefaultAPIKey,
		APISecret: idenfytest.DefaultAPISecret,
	})
	if err != nil {
		return err
	}
	concurrency, _ := strconv.Atoi(os.Getenv("CHILD_CONCURRENCY"))
	limits, err := worker.ParseSendLimits(os.Getenv("CHILD_SEND_LIMITS"))
	if err != nil {
		return err
	}
	guard, err := worker.ParsePumpingGuard(os.Getenv("CHILD_PUMPING_GUARD"))
	if err != nil {
		return err
	}
	rate, err := worker.ParseRateLimit(os.Getenv("CHILD_RATE_LIMIT"))
	if err != nil {
		return err
	}
	breaker, err := worker.ParseBreaker(os.Getenv("CHILD_BREAKER"))
	if err != nil {
		return err
	}
	probe, err := worker.ParseBreakerProbe(os.Getenv("CHILD_BREAKER_PROBE"))
	if err != nil {
		return err
	}
	var opts []worker.Option
	if v := os.Getenv("CHILD_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		opts = append(opts, worker.WithLease(d))
	}
	w, err := worker.New(worker.Config{
		Conn:         nc,
		Client:       client,
		HashKey:      testHashKey,
		Logger:       zerolog.New(os.Stderr).Level(zerolog.ErrorLevel),
		Concurrency:  concurrency,
		SendLimits:   limits,
		PumpingGuard: guard,
		RateLimit:    rate,
		Breaker:      breaker,
		BreakerProbe: probe,
	}, opts...)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := w.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready", w.ServiceID())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		return err
	}
	return nc.Drain()
}

// child is a worker process.
type child struct {
	cmd *exec.Cmd
	id  string
}

// startChild starts a worker process against the given NATS server and
// simulator, and returns once it serves. env adds CHILD_* settings.
func startChild(t testing.TB, natsURL, idenfyURL string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		"CHILD_NATS_URL="+natsURL,
		"CHILD_IDENFY_URL="+idenfyURL,
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- id
			}
		}
	}()
	select {
	case c.id = <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("child worker did not start within 30s")
	}
	return c
}

// kill ends the process with SIGKILL: no shutdown, no acks, no releases.
func (c *child) kill(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}
