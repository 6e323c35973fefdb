package idenfytest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

// fatalTB records the first Fatalf and stops the goroutine as testing.T
// does, so a test can see NewServer fail its caller.
type fatalTB struct {
	testing.TB
	fatal string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalOf runs f with a fatalTB on a goroutine of its own and returns what
// it failed with ("" if it returned).
func fatalOf(t *testing.T, f func(tb testing.TB)) string {
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(tb)
	}()
	<-done
	return tb.fatal
}

func TestNewServerInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opt  idenfytest.Option
		want string
	}{
		{"no attempts", idenfytest.WithMaxAttempts(0), "idenfytest: WithMaxAttempts(0): must be at least 1"},
		{"empty secret", idenfytest.WithCredentials("key", ""), "idenfytest: WithCredentials: empty API key or secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fatalOf(t, func(tb testing.TB) { idenfytest.NewServer(tb, tt.opt) })
			if got != tt.want {
				t.Errorf("NewServer(tb, %s) failed with %q, want %q", tt.name, got, tt.want)
			}
			var panicked any
			func() {
				defer func() { panicked = recover() }()
				idenfytest.NewServer(nil, tt.opt).Close()
			}()
			if panicked != tt.want {
				t.Errorf("NewServer(nil, %s) panicked with %v, want %q", tt.name, panicked, tt.want)
			}
		})
	}
}

func TestServerClient(t *testing.T) {
	tests := []struct {
		name string
		opts []idenfytest.Option
	}{
		{"default credentials", nil},
		{"other credentials", []idenfytest.Option{idenfytest.WithCredentials("key-1", "secret-1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, append([]idenfytest.Option{idenfytest.WithClock(t0)}, tt.opts...)...)
			for _, opts := range [][]idenfy.Option{nil, {idenfy.WithUnencryptedHTTP2()}} {
				if _, err := s.Client(opts...).SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: phone}); err != nil {
					t.Errorf("Client(%d options).SendSMS = %v, want sent", len(opts), err)
				}
			}
			if got := len(s.Outbox(phone)); got != 2 {
				t.Errorf("%d SMS delivered, want 2", got)
			}
		})
	}
}

func TestServerClientInvalidOption(t *testing.T) {
	got := fatalOf(t, func(tb testing.TB) { idenfytest.NewServer(tb).Client(idenfy.WithTimeout(0)) })
	if !strings.HasPrefix(got, "idenfytest: Client: ") || !strings.Contains(got, "timeout") {
		t.Errorf("Client(WithTimeout(0)) failed with %q, want an idenfytest: Client: error about the timeout", got)
	}
}
