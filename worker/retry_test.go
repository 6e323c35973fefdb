package worker_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The backoff policy of the README ("How it behaves on failures") over
// request/reply. The worker runs on the fake clock: waits between attempts
// cost no wall time, but spend the retry budget.

// TestRetryRecovers: what is retried (429, 500, 502, 503, 504, dropped
// connections) recovers once iDenfy does, after one attempt per fault plus
// the one that succeeds. A send after an attempt that may have been
// processed says it may have texted twice.
func TestRetryRecovers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name          string
		fault         idenfytest.Fault
		wantDuplicate bool
	}{
		{name: "429", fault: idenfytest.Fault{Status: 429, Count: 2}},
		{name: "500", fault: idenfytest.Fault{Status: 500, Count: 2}, wantDuplicate: true},
		{name: "502", fault: idenfytest.Fault{Status: 502, Count: 2}, wantDuplicate: true},
		{name: "503", fault: idenfytest.Fault{Status: 503, Count: 2}},
		{name: "504", fault: idenfytest.Fault{Status: 504, Count: 2}, wantDuplicate: true},
		{name: "dropped connection", fault: idenfytest.Fault{Drop: 2}, wantDuplicate: true},
	}
	for _, tt := range tests {
		t.Run("send "+tt.name, func(t *testing.T) {
			h.sim.ClearFaults()
			if err := h.sim.InjectFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			before := h.calls("send")
			got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil)
			calls := h.calls("send") - before
			want := messages.SendResult{Status: messages.StatusSent, RequestID: got.send.RequestID, Attempts: 3, PossibleDuplicate: tt.wantDuplicate}
			if got.send != want || got.send.RequestID == "" || calls != 3 {
				t.Errorf("send after 2 × %s = %v with %d upstream calls, want %+v with 3", tt.name, got, calls, want)
			}
			checkNoErrorHeaders(t, "send", got)
		})
		t.Run("verify "+tt.name, func(t *testing.T) {
			h.sim.ClearFaults()
			requestID, code := h.sendCode(usPhone2)
			if err := h.sim.InjectFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			before := h.calls("verify")
			got := h.ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, nil)
			calls := h.calls("verify") - before
			want := messages.VerifyResult{Status: messages.StatusVerified, IsVerified: true, RequestID: requestID, Attempts: 3}
			if got.verify != want || calls != 3 {
				t.Errorf("verify after 2 × %s = %v with %d upstream calls, want %+v with 3", tt.name, got, calls, want)
			}
		})
	}
}

// TestRetryTimeouts: an attempt that gets no answer in time is retried;
// having been written, it may have been processed.
func TestRetryTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("recover", func(t *testing.T) {
		t.Parallel()
		for _, op := range []string{"send", "verify"} {
			t.Run(op, func(t *testing.T) {
				t.Parallel()
				p := newUpstreamProxy(t)
				// Generous: only the attempts held by the latency may time out.
				h := newHarness(t, through(t, p), withAttemptTimeout(2*time.Second))
				var req any = messages.SendRequest{PhoneNumber: usPhone}
				if op == "verify" {
					requestID, code := h.sendCode(usPhone)
					req = messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}
				}
				// The simulator holds every call until it is abandoned,
				// until the third call of this request arrives.
				third := p.arrivals() + 3
				p.setIntercept(func(n int, _ http.ResponseWriter, _ *http.Request) bool {
					if n == third {
						if err := h.sim.InjectFault(idenfytest.Fault{Latency: "0s"}); err != nil {
							panic(err)
						}
					}
					return false
				})
				if err := h.sim.InjectFault(idenfytest.Fault{Latency: "1h"}); err != nil {
					t.Fatal(err)
				}
				before := h.calls(op)
				got := h.ask(op, req, nil)
				calls := h.calls(op) - before
				switch {
				case op == "send" && (got.send.Status != messages.StatusSent || !got.send.PossibleDuplicate):
					t.Errorf("send after 2 timeouts = %v, want sent with possible_duplicate", got)
				case op == "verify" && got.verify.Status != messages.StatusVerified:
					t.Errorf("verify after 2 timeouts = %v, want verified", got)
				}
				if got.attempts() != 3 || calls != 3 {
					t.Errorf("%s after 2 timeouts = %v with %d upstream calls, want 3 attempts", op, got, calls)
				}
			})
		}
	})
	t.Run("past the budget", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, withAttemptTimeout(100*time.Millisecond),
			withConfig(func(c *worker.Config) { c.RetryMaxElapsed = time.Second }))
		if err := h.sim.InjectFault(idenfytest.Fault{Latency: "1h"}); err != nil {
			t.Fatal(err)
		}
		// A send that timed out keeps its cause and says possible_duplicate;
		// a verify's false after it could not be trusted: outcome_unknown.
		for _, tt := range []struct {
			op        string
			req       any
			code      messages.Code
			retryable bool
		}{
			{"send", messages.SendRequest{PhoneNumber: usPhone}, messages.CodeUpstreamUnavailable, true},
			{"verify", messages.VerifyRequest{RequestID: unknownReqID, ReceivedCode: "1234"}, messages.CodeOutcomeUnknown, false},
		} {
			before := h.calls(tt.op)
			got := h.ask(tt.op, tt.req, nil)
			calls := h.calls(tt.op) - before
			checkFailed(t, tt.op+" timing out", got, tt.code, tt.retryable)
			if tt.op == "send" && !got.send.PossibleDuplicate {
				t.Errorf("send timing out = %v, want possible_duplicate", got)
			}
			if got.attempts() < 2 || int64(got.attempts()) != calls {
				t.Errorf("%s timing out = %v with %d upstream calls, want more than 1 attempt, each a call", tt.op, got, calls)
			}
			if e := got.err(); e != nil && !strings.Contains(e.Message, "did not answer in time") {
				t.Errorf("%s timing out: message %q, want it to say iDenfy did not answer in time", tt.op, e.Message)
			}
		}
	})
}

// TestUnreadableAnswerIsRetried: a 2xx answer that is not the documented
// JSON was most likely processed: it is retried, and a send says it may
// have texted twice.
func TestUnreadableAnswerIsRetried(t *testing.T) {
	t.Parallel()
	p := newUpstreamProxy(t)
	h := newHarness(t, through(t, p))
	p.setIntercept(func(n int, w http.ResponseWriter, _ *http.Request) bool {
		if n > 1 {
			return false
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html>maintenance</html>")
		return true
	})
	got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil)
	if got.send.Status != messages.StatusSent || got.send.Attempts != 2 || !got.send.PossibleDuplicate {
		t.Errorf("send after an unreadable answer = %v, want sent after 2 attempts with possible_duplicate", got)
	}
}

// TestNoRetryOnClientErrors: other 4xx answers are final. The fault hits
// only the first call, so a retry would have succeeded: exactly one call
// shows there was none.
func TestNoRetryOnClientErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		fault idenfytest.Fault
		want  messages.Code
	}{
		{idenfytest.Fault{Status: 400}, messages.CodeUpstreamRejected},
		{idenfytest.Fault{Status: 400, Identifier: "PERMISSIONS_ERROR"}, messages.CodeQuotaExhausted},
		{idenfytest.Fault{Status: 401}, messages.CodeUnauthorized},
		{idenfytest.Fault{Status: 402}, messages.CodeQuotaExhausted},
		{idenfytest.Fault{Status: 403}, messages.CodeUnauthorized},
		{idenfytest.Fault{Status: 404}, messages.CodeUpstreamRejected},
		{idenfytest.Fault{Status: 409}, messages.CodeUpstreamRejected},
		{idenfytest.Fault{Status: 422}, messages.CodeUpstreamRejected},
	}
	for _, tt := range tests {
		for _, op := range []string{"send", "verify"} {
			t.Run(fmt.Sprintf("%s %d %s", op, tt.fault.Status, tt.fault.Identifier), func(t *testing.T) {
				h.sim.ClearFaults()
				var req any = messages.SendRequest{PhoneNumber: usPhone}
				if op == "verify" {
					requestID, code := h.sendCode(usPhone)
					req = messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}
				}
				if err := h.sim.InjectFault(tt.fault); err != nil {
					t.Fatal(err)
				}
				before := h.calls(op)
				got := h.ask(op, req, nil)
				calls := h.calls(op) - before
				checkFailed(t, op, got, tt.want, false)
				if got.attempts() != 1 || calls != 1 {
					t.Errorf("%s with one %d = %v after %d upstream calls, want 1 attempt", op, tt.fault.Status, got, calls)
				}
			})
		}
	}
}

// TestRetryAfter: a 429's Retry-After is waited out when the budget allows,
// and ends the retries at once when it does not.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.RetryMaxElapsed = 20 * time.Second }))
	tests := []struct {
		name       string
		retryAfter string
		wantWait   time.Duration // at least, between the attempts
	}{
		{name: "7s", retryAfter: "7", wantWait: 7 * time.Second},
		{name: "15s, within the budget", retryAfter: "15", wantWait: 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.sim.ClearFaults()
			if err := h.sim.InjectFault(idenfytest.Fault{Status: 429, RetryAfter: tt.retryAfter}); err != nil {
				t.Fatal(err)
			}
			before := h.calls("send")
			start := h.clock.Now()
			got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil)
			waited := h.clock.Now().Sub(start)
			if got.send.Status != messages.StatusSent || got.send.Attempts != 2 || h.calls("send")-before != 2 {
				t.Errorf("send after a 429 with Retry-After %s = %v, want sent after 2 attempts", tt.retryAfter, got)
			}
			if waited < tt.wantWait {
				t.Errorf("send after a 429 with Retry-After %s waited %v, want at least %v", tt.retryAfter, waited, tt.wantWait)
			}
		})
	}
	t.Run("past the budget", func(t *testing.T) {
		h.sim.ClearFaults()
		defer h.sim.ClearFaults()
		if err := h.sim.InjectFault(idenfytest.Fault{Status: 429, Count: 5, RetryAfter: "60"}); err != nil {
			t.Fatal(err)
		}
		before := h.calls("send")
		start := h.clock.Now()
		got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil)
		checkFailed(t, "send after a 429 with Retry-After 60", got, messages.CodeRateLimited, true)
		if calls := h.calls("send") - before; got.send.Attempts != 1 || calls != 1 {
			t.Errorf("send after a 429 with Retry-After 60 = %v after %d upstream calls, want 1 attempt", got, calls)
		}
		if waited := h.clock.Now().Sub(start); waited != 0 {
			t.Errorf("send after a 429 with Retry-After 60 waited %v, want no wait", waited)
		}
	})
}

// TestRetryBudget: WORKER_RETRY_MAX_ELAPSED bounds the waits of one
// request; past it, the last failure is the answer.
func TestRetryBudget(t *testing.T) {
	t.Parallel()
	const budget = 3 * time.Second
	h := newHarness(t, withConfig(func(c *worker.Config) { c.RetryMaxElapsed = budget }))
	if err := h.sim.InjectFault(idenfytest.Fault{Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	start := h.clock.Now()
	got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil)
	waited := h.clock.Now().Sub(start)
	checkFailed(t, "send to an unavailable iDenfy", got, messages.CodeUpstreamUnavailable, true)
	if calls := h.calls("send"); got.send.Attempts < 2 || int64(got.send.Attempts) != calls {
		t.Errorf("send to an unavailable iDenfy = %v after %d upstream calls, want more than 1 attempt, each a call", got, calls)
	}
	if waited > budget {
		t.Errorf("send to an unavailable iDenfy waited %v between attempts, over the budget of %v", waited, budget)
	}
	if e := got.err(); e != nil && !strings.Contains(e.Message, fmt.Sprintf("on %d attempts", got.send.Attempts)) {
		t.Errorf("message %q, want it to count the %d attempts", e.Message, got.send.Attempts)
	}
}

// TestVerifyAmbiguity: after an attempt that may have consumed the code, a
// later false cannot be trusted (failed, outcome_unknown, never rejected); a
// later true can.
func TestVerifyAmbiguity(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name      string
		fault     idenfytest.Fault
		wrongCode bool
		want      messages.Status
	}{
		{name: "processed 500 then false", fault: idenfytest.Fault{Status: 500, Processed: true}, want: messages.StatusFailed},
		{name: "processed 502 then false", fault: idenfytest.Fault{Status: 502, Processed: true}, want: messages.StatusFailed},
		{name: "processed 504 then false", fault: idenfytest.Fault{Status: 504, Processed: true}, want: messages.StatusFailed},
		{name: "processed drop then false", fault: idenfytest.Fault{Drop: 1, Processed: true}, want: messages.StatusFailed},
		{name: "ambiguous 502 then a wrong code's false", fault: idenfytest.Fault{Status: 502}, wrongCode: true, want: messages.StatusFailed},
		{name: "502 then true", fault: idenfytest.Fault{Status: 502}, want: messages.StatusVerified},
		{name: "drop then true", fault: idenfytest.Fault{Drop: 1}, want: messages.StatusVerified},
		// 503 and 429 are answered before anything is processed: a false
		// after them is iDenfy's word.
		{name: "503 then a wrong code's false", fault: idenfytest.Fault{Status: 503}, wrongCode: true, want: messages.StatusRejected},
		{name: "429 then a wrong code's false", fault: idenfytest.Fault{Status: 429}, wrongCode: true, want: messages.StatusRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.sim.ClearFaults()
			requestID, code := h.sendCode(usPhone)
			if tt.wrongCode {
				code = otherCode(code)
			}
			if err := h.sim.InjectFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			before := h.calls("verify")
			got := h.ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, nil)
			calls := h.calls("verify") - before
			if got.verify.Status != tt.want || got.verify.Attempts != 2 || calls != 2 {
				t.Fatalf("verify = %v after %d upstream calls, want %s after 2 attempts", got, calls, tt.want)
			}
			if tt.want == messages.StatusFailed {
				checkFailed(t, "verify", got, messages.CodeOutcomeUnknown, false)
			}
		})
	}
}

// TestSendAmbiguity: a send retried after an attempt that may have been
// processed may have texted twice, and says so.
func TestSendAmbiguity(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tests := []struct {
		name          string
		phone         string
		fault         idenfytest.Fault
		wantDuplicate bool
		wantTexts     int
	}{
		{name: "processed 500", phone: "+12025550101", fault: idenfytest.Fault{Status: 500, Processed: true}, wantDuplicate: true, wantTexts: 2},
		{name: "processed drop", phone: "+12025550102", fault: idenfytest.Fault{Drop: 1, Processed: true}, wantDuplicate: true, wantTexts: 2},
		{name: "unprocessed 502", phone: "+12025550103", fault: idenfytest.Fault{Status: 502}, wantDuplicate: true, wantTexts: 1},
		{name: "503", phone: "+12025550104", fault: idenfytest.Fault{Status: 503}, wantTexts: 1},
		{name: "429", phone: "+12025550105", fault: idenfytest.Fault{Status: 429}, wantTexts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.sim.ClearFaults()
			if err := h.sim.InjectFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			got := h.ask("send", messages.SendRequest{PhoneNumber: tt.phone}, nil)
			if got.send.Status != messages.StatusSent || got.send.Attempts != 2 || got.send.PossibleDuplicate != tt.wantDuplicate {
				t.Errorf("send(%q) = %v, want sent after 2 attempts with possible_duplicate %v", tt.phone, got, tt.wantDuplicate)
			}
			out := h.sim.Outbox(tt.phone)
			if len(out) != tt.wantTexts || out[len(out)-1].RequestID != got.send.RequestID {
				t.Errorf("Outbox(%q) = %+v, want %d SMS, the last for %s", tt.phone, out, tt.wantTexts, got.send.RequestID)
			}
		})
	}
}
