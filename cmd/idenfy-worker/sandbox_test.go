package main

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

func TestSandbox(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		seen []idenfytest.Delivery
	)
	sb, err := startSandbox(sandboxOptions{
		natsPort:    -1,
		simAddr:     "127.0.0.1:0",
		metricsAddr: "127.0.0.1:0",
		logLevel:    zerolog.WarnLevel,
		logs:        zerolog.NewTestWriter(t),
		sendLimits:  worker.DefaultSendLimits,
		deliveries: func(d idenfytest.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, d)
		},
	})
	if err != nil {
		t.Fatalf("startSandbox = %v", err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	for name, u := range map[string]string{"NATS": sb.natsURL, "simulator": sb.simURL, "metrics": sb.metricsURL} {
		if !strings.Contains(u, "127.0.0.1:") {
			t.Errorf("%s URL %q is not on 127.0.0.1", name, u)
		}
	}
	if status, body := get(sb.metricsURL + "/readyz"); status != http.StatusOK {
		t.Errorf("GET /readyz of the sandbox = %d %q, want 200", status, body)
	}

	// What `nats req idenfy.phone.send '{...}'` does.
	nc := natstest.Connect(t, sb.natsURL)
	const phone = "+12025550163"
	res := request[messages.SendResult](t, nc, "idenfy.phone.send", map[string]string{"phone_number": phone, "correlation_id": "signup-42"})
	want := messages.SendResult{Status: messages.StatusSent, RequestID: res.RequestID, CorrelationID: "signup-42", Attempts: 1}
	if res != want || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(res.RequestID) {
		t.Errorf("send = %+v, want %+v with a 32-hex request_id", res, want)
	}

	// The simulator ran the hook before it answered send-sms.
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("the delivery hook saw %d deliveries, want 1: %+v", len(got), got)
	}
	d := got[0]
	if d.PhoneNumber != phone || d.Channel != idenfytest.ChannelSMS || d.RequestID != res.RequestID ||
		!regexp.MustCompile(`^[0-9]{4}$`).MatchString(d.Code) || !strings.Contains(d.Text, d.Code) {
		t.Errorf("the hook saw %+v, want an SMS to %s for request %s whose text holds its 4-digit code", d, phone, res.RequestID)
	}
	if code, _ := sb.sim.LastCode(phone); code != d.Code {
		t.Errorf("the hook saw code %q, the outbox holds %q", d.Code, code)
	}

	dir := sb.dir
	if err := sb.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close, stat %s = %v, want it removed", dir, err)
	}
	if sb.ns.Running() {
		t.Error("after Close, the embedded NATS server still runs")
	}
	if err := sb.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// TestSandboxBusyPorts checks that preferred ports in use fall back to
// random ones instead of failing.
func TestSandboxBusyPorts(t *testing.T) {
	t.Parallel()
	busy := func() *net.TCPAddr {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().(*net.TCPAddr)
	}
	natsAddr, simAddr := busy(), busy()
	sb, err := startSandbox(sandboxOptions{natsPort: natsAddr.Port, simAddr: simAddr.String(), logs: zerolog.NewTestWriter(t), logLevel: zerolog.WarnLevel})
	if err != nil {
		t.Fatalf("startSandbox on busy ports = %v", err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	if strings.HasSuffix(sb.natsURL, ":"+strconv.Itoa(natsAddr.Port)) || strings.HasSuffix(sb.simURL, simAddr.String()) {
		t.Errorf("sandbox on NATS %s, simulator %s: want other ports than the busy %d and %s", sb.natsURL, sb.simURL, natsAddr.Port, simAddr)
	}
	if sb.metricsURL != "" {
		t.Errorf("metricsURL = %q with metrics off, want empty", sb.metricsURL)
	}
	if err := sb.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

func TestFreeAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got, want := freeAddr(ln.Addr().String()), "127.0.0.1:0"; got != want {
		t.Errorf("freeAddr(%s in use) = %s, want %s", ln.Addr(), got, want)
	}
	if got := freeAddr("127.0.0.1:0"); got != "127.0.0.1:0" {
		t.Errorf("freeAddr(127.0.0.1:0) = %s, want it unchanged", got)
	}
}

// TestRunSandbox runs the sandbox subcommand until "Ctrl-C".
func TestNATSCLI(t *testing.T) {
	tests := []struct{ url, want string }{
		{"nats://127.0.0.1:4222", "nats"},
		{"nats://127.0.0.1:41234", "nats -s nats://127.0.0.1:41234"},
	}
	for _, tt := range tests {
		if got := natsCLI(tt.url); got != tt.want {
			t.Errorf("natsCLI(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestSendLimitsLine(t *testing.T) {
	tests := []struct {
		limits []worker.SendLimit
		want   string
	}{
		{nil, "send limits: off (use -send-limits 3/10m,10/24h for production's)"},
		{worker.DefaultSendLimits, "send limits: 3/10m,10/1d per number (-send-limits off to lift them)"},
	}
	for _, tt := range tests {
		if got := sendLimitsLine(tt.limits); got != tt.want {
			t.Errorf("sendLimitsLine(%v) = %q, want %q", tt.limits, got, tt.want)
		}
	}
}

func TestRunSandbox(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sandbox", "-nats-port", "-1", "-sim-addr", "127.0.0.1:0", "-metrics-addr", "", "-log-level", "warn"}, &out, &errOut, nil)
	}()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), "Ctrl-C stops it.") {
		select {
		case err := <-done:
			t.Fatalf("run(sandbox) = %v before it was stopped\n%s\n%s", err, out.String(), errOut.String())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run(sandbox) printed no instructions:\n%s", out.String())
		}
	}
	printed := out.String()
	for _, want := range []string{"metrics       off", "send limits: off (use -send-limits", "nats -s nats://127.0.0.1:"} {
		if !strings.Contains(printed, want) {
			t.Errorf("run(sandbox -nats-port -1 -metrics-addr '') printed\n%s\nwant %q", printed, want)
		}
	}
	// Trying it by hand sends to one number again and again: the sandbox
	// lets it, unlike production's 3 per 10 minutes.
	natsURL := regexp.MustCompile(`NATS +(nats://\S+)`).FindStringSubmatch(printed)
	if natsURL == nil {
		t.Fatalf("run(sandbox) printed no NATS URL:\n%s", printed)
	}
	nc := natstest.Connect(t, natsURL[1])
	for i := range 4 {
		res := request[messages.SendResult](t, nc, "idenfy.phone.send", map[string]string{"phone_number": "+12025550163"})
		if res.Status != messages.StatusSent {
			t.Errorf("send %d to one number in the sandbox = %+v, want sent", i+1, res)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run(sandbox) after Ctrl-C = %v, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("run(sandbox) did not return after Ctrl-C")
	}
	if !strings.Contains(out.String(), "stopping the sandbox") {
		t.Errorf("run(sandbox) printed\n%s\nwant it to say it stops", out.String())
	}
}
