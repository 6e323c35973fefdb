package idenfy_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

// simStart is the frozen start of the simulator's clock.
var simStart = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// newSimClient starts a simulator and returns it with the real client
// pointed at it.
func newSimClient(t *testing.T, opts ...idenfy.Option) (*idenfytest.Server, *idenfy.Client) {
	t.Helper()
	s := idenfytest.NewServer(t, idenfytest.WithClock(simStart))
	return s, s.Client(opts...)
}

// otherCode returns a 4-digit code that is not code.
func otherCode(code string) string {
	var n int
	fmt.Sscanf(code, "%d", &n)
	return fmt.Sprintf("%04d", (n+1)%10000)
}

func TestSimulatorStory(t *testing.T) {
	s, c := newSimClient(t)
	ctx := context.Background()

	sent, err := c.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: testPhone, SenderName: "The Sender"})
	if err != nil {
		t.Fatalf("SendSMS(%s) = %v, want nil", testPhone, err)
	}
	if !hex32.MatchString(sent.RequestID) {
		t.Errorf("SendSMS(%s) request_id = %q, want 32 hex digits", testPhone, sent.RequestID)
	}
	outbox := s.Outbox(testPhone)
	if len(outbox) != 1 {
		t.Fatalf("Outbox(%s) = %+v, want one SMS", testPhone, outbox)
	}
	sms := outbox[0]
	if sms.Channel != idenfytest.ChannelSMS || sms.RequestID != sent.RequestID || sms.SenderName != "The Sender" {
		t.Errorf("Outbox(%s)[0] = %+v, want an SMS from The Sender for %s", testPhone, sms, sent.RequestID)
	}
	if code, ok := s.LastCode(testPhone); !ok || code != sms.Code {
		t.Errorf("LastCode(%s) = %q, %v, want %q, true", testPhone, code, ok, sms.Code)
	}

	for _, step := range []struct {
		name string
		code string
		want bool
	}{
		{"wrong code", otherCode(sms.Code), false},
		{"right code", sms.Code, true},
		{"same code again", sms.Code, false}, // the vendor accepts a code once
	} {
		got, err := c.VerifySMS(ctx, idenfy.VerifySMSRequest{RequestID: sent.RequestID, ReceivedCode: step.code})
		if err != nil || got.IsVerified != step.want {
			t.Errorf("%s: VerifySMS(%s) = %+v, %v, want is_verified %v", step.name, step.code, got, err, step.want)
		}
	}
	if got, want := s.Stats(), (idenfytest.Stats{SendSMS: 1, VerifySMS: 3}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// TestSimulatorProcessed500 shows why a 500 is ambiguous: iDenfy texted the
// user, and consumed the code, although the answer was an error.
func TestSimulatorProcessed500(t *testing.T) {
	s, c := newSimClient(t)
	ctx := context.Background()

	if err := s.InjectFault(idenfytest.Fault{Status: 500, Processed: true}); err != nil {
		t.Fatalf("InjectFault = %v", err)
	}
	_, err := c.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: testPhone})
	if !errors.Is(err, idenfy.ErrServerError) || !idenfy.Ambiguous(err) {
		t.Fatalf("SendSMS with a processed 500 = %v, want an ambiguous ErrServerError", err)
	}
	checkNoSecrets(t, err)
	outbox := s.Outbox(testPhone)
	if len(outbox) != 1 {
		t.Fatalf("Outbox(%s) after a processed 500 = %+v, want the SMS sent anyway", testPhone, outbox)
	}

	// The request_id never reached us, but the outbox has it: verify through
	// a processed 500, then the right code again.
	requestID, code := outbox[0].RequestID, outbox[0].Code
	if err := s.InjectFault(idenfytest.Fault{Status: 500, Processed: true}); err != nil {
		t.Fatalf("InjectFault = %v", err)
	}
	_, err = c.VerifySMS(ctx, idenfy.VerifySMSRequest{RequestID: requestID, ReceivedCode: code})
	if !errors.Is(err, idenfy.ErrServerError) || !idenfy.Ambiguous(err) {
		t.Fatalf("VerifySMS with a processed 500 = %v, want an ambiguous ErrServerError", err)
	}
	got, err := c.VerifySMS(ctx, idenfy.VerifySMSRequest{RequestID: requestID, ReceivedCode: code})
	if err != nil || got.IsVerified {
		t.Errorf("VerifySMS of the right code after a processed 500 = %+v, %v, want false: the code was consumed", got, err)
	}
}

// TestSimulatorFaults runs the client against the simulator's fault kinds.
func TestSimulatorFaults(t *testing.T) {
	tests := []struct {
		name        string
		fault       idenfytest.Fault
		wantIs      error
		wantWritten bool // for transport errors
		ambiguous   bool
		delivered   bool
	}{
		{name: "503", fault: idenfytest.Fault{Status: 503}, wantIs: idenfy.ErrServerError},
		{name: "502", fault: idenfytest.Fault{Status: 502}, wantIs: idenfy.ErrServerError, ambiguous: true},
		{name: "429", fault: idenfytest.Fault{Status: 429, RetryAfter: "7"}, wantIs: idenfy.ErrRateLimited},
		{name: "401", fault: idenfytest.Fault{Status: 401}, wantIs: idenfy.ErrUnauthorized},
		{name: "402", fault: idenfytest.Fault{Status: 402}, wantIs: idenfy.ErrQuotaExhausted},
		{name: "400 permissions", fault: idenfytest.Fault{Status: 400, Identifier: "PERMISSIONS_ERROR"}, wantIs: idenfy.ErrQuotaExhausted},
		{name: "drop", fault: idenfytest.Fault{Drop: 1}, wantWritten: true, ambiguous: true},
		{name: "processed drop", fault: idenfytest.Fault{Drop: 1, Processed: true}, wantWritten: true, ambiguous: true, delivered: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := newSimClient(t)
			if err := s.InjectFault(tt.fault); err != nil {
				t.Fatalf("InjectFault(%+v) = %v", tt.fault, err)
			}
			_, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone})
			name := fmt.Sprintf("SendSMS with fault %+v", tt.fault)
			if tt.wantIs != nil {
				checkSentinels(t, name, err, tt.wantIs)
				if got := idenfy.Ambiguous(err); got != tt.ambiguous {
					t.Errorf("Ambiguous(%v) = %v, want %v", err, got, tt.ambiguous)
				}
				checkNoSecrets(t, err)
			} else {
				checkTransportError(t, name, err, tt.wantWritten, false)
			}
			if tt.fault.RetryAfter != "" {
				var ae *idenfy.APIError
				if !errors.As(err, &ae) || ae.RetryAfter != 7*time.Second {
					t.Errorf("%s = %#v, want RetryAfter 7s", name, err)
				}
			}
			if got := len(s.Outbox(testPhone)) == 1; got != tt.delivered {
				t.Errorf("%s: delivered = %v, want %v (outbox %+v)", name, got, tt.delivered, s.Outbox(testPhone))
			}
			// The fault is spent: the next call goes through.
			if _, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone}); err != nil {
				t.Errorf("SendSMS after the fault = %v, want nil", err)
			}
		})
	}
}

func TestSimulatorValidationAndAuth(t *testing.T) {
	s, c := newSimClient(t)
	ctx := context.Background()

	_, err := c.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: "37060012345"})
	var ae *idenfy.APIError
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Identifier == "" {
		t.Errorf("SendSMS of a number without '+' = %v, want a 400 APIError with an identifier", err)
	}
	checkSentinels(t, "SendSMS of a bad number", err)
	checkNoSecrets(t, err)

	wrong, err := idenfy.NewClient(idenfy.Config{BaseURL: s.URL, APIKey: idenfytest.DefaultAPIKey, APISecret: testSecret})
	if err != nil {
		t.Fatalf("NewClient = %v", err)
	}
	_, err = wrong.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: testPhone})
	checkSentinels(t, "SendSMS with a wrong secret", err, idenfy.ErrUnauthorized)
	checkNoSecrets(t, err)
	if n := len(s.Outbox(testPhone)); n != 0 {
		t.Errorf("Outbox(%s) has %d deliveries after refused calls, want 0", testPhone, n)
	}
}
