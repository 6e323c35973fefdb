package worker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The request/reply intake, end to end: a real NATS server, the simulator
// over real HTTP, a worker between them. Each test has its own harness, so
// they run in parallel.

const (
	usPhone      = "+12025550163" // masked +1********63
	usPhone2     = "+12025550177"
	gbPhone      = "+447700900123"
	unknownReqID = "0123456789abcdef0123456789abcdef" // well-formed, never issued
)

// exchange is one request/reply round trip: the answer and its decoded body.
type exchange struct {
	msg    *nats.Msg
	send   messages.SendResult
	verify messages.VerifyResult
}

// status, err, attempts and correlationID read the result of either
// operation.
func (x exchange) status() messages.Status {
	if x.verify.Status != "" {
		return x.verify.Status
	}
	return x.send.Status
}

func (x exchange) err() *messages.Error {
	if x.verify.Error != nil {
		return x.verify.Error
	}
	return x.send.Error
}

func (x exchange) attempts() int { return x.send.Attempts + x.verify.Attempts }

func (x exchange) correlationID() string { return x.send.CorrelationID + x.verify.CorrelationID }

func (x exchange) String() string {
	if x.msg == nil {
		return "<no answer>"
	}
	return string(x.msg.Data)
}

// ask sends payload to the send or verify endpoint and decodes the answer.
func (h *harness) ask(op string, payload any, hdr nats.Header) exchange {
	h.t.Helper()
	x := exchange{}
	switch op {
	case "send":
		x.msg = h.request(h.subj.Send, payload, hdr)
		decodeInto(h.t, x.msg.Data, &x.send)
	case "verify":
		x.msg = h.request(h.subj.Verify, payload, hdr)
		decodeInto(h.t, x.msg.Data, &x.verify)
	default:
		h.t.Fatalf("ask: unknown operation %q", op)
	}
	return x
}

// calls returns the vendor calls the simulator received for op so far.
func (h *harness) calls(op string) int64 {
	st := h.sim.Stats()
	if op == "verify" {
		return st.VerifySMS
	}
	return st.SendSMS
}

// serviceErrorCodes is the Nats-Service-Error-Code of each contract code, as
// `nats micro` and other micro tooling show it.
var serviceErrorCodes = map[messages.Code]int{
	messages.CodeInvalidRequest:     400,
	messages.CodeInvalidPhoneNumber: 400,
	messages.CodeInvalidSenderName:  400,
	messages.CodeInvalidRequestID:   400,
	messages.CodeInvalidCode:        400,
	// The worker's own account, not the caller, is at fault.
	messages.CodeUnauthorized:        500,
	messages.CodeQuotaExhausted:      500,
	messages.CodeCountryNotAllowed:   403,
	messages.CodeNumberNotAllowed:    403,
	messages.CodeSuspectedFraud:      403,
	messages.CodeRateLimited:         429,
	messages.CodeTooManySends:        429,
	messages.CodeUpstreamRejected:    502,
	messages.CodeOutcomeUnknown:      502,
	messages.CodeUpstreamUnavailable: 503,
	messages.CodeShuttingDown:        503,
}

// checkFailed checks that x failed with code and retryable, in the body and
// in the micro error headers.
func checkFailed(t testing.TB, what string, x exchange, code messages.Code, retryable bool) {
	t.Helper()
	e := x.err()
	if x.status() != messages.StatusFailed || e == nil || e.Code != code || e.Retryable != retryable {
		t.Errorf("%s = %v, want failed with %s (retryable %v)", what, x, code, retryable)
		return
	}
	if e.Message == "" {
		t.Errorf("%s = %v, want an error message", what, x)
	}
	if got, want := x.msg.Header.Get(micro.ErrorHeader), string(code)+": "+e.Message; got != want {
		t.Errorf("%s: header %s = %q, want %q", what, micro.ErrorHeader, got, want)
	}
	if got, want := x.msg.Header.Get(micro.ErrorCodeHeader), strconv.Itoa(serviceErrorCodes[code]); got != want {
		t.Errorf("%s: header %s = %q, want %q", what, micro.ErrorCodeHeader, got, want)
	}
}

// checkNoErrorHeaders checks that a successful answer carries no micro
// error headers: micro clients would read it as a failure.
func checkNoErrorHeaders(t testing.TB, what string, x exchange) {
	t.Helper()
	for _, name := range []string{micro.ErrorHeader, micro.ErrorCodeHeader} {
		if v := x.msg.Header.Get(name); v != "" {
			t.Errorf("%s: header %s = %q on a success, want none", what, name, v)
		}
	}
}

func TestSendAndVerify(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	sent := h.ask("send", messages.SendRequest{PhoneNumber: usPhone, SenderName: "The Sender", CorrelationID: "signup-42"}, nil)
	if sent.send.Status != messages.StatusSent || len(sent.send.RequestID) != 32 || sent.send.CorrelationID != "signup-42" ||
		sent.send.Attempts != 1 || sent.send.PossibleDuplicate || sent.send.Error != nil {
		t.Fatalf("send(%q) = %v, want sent with a request_id, correlation_id signup-42, 1 attempt", usPhone, sent)
	}
	checkNoErrorHeaders(t, "send", sent)
	out := h.sim.Outbox(usPhone)
	if len(out) != 1 || out[0].SenderName != "The Sender" || out[0].RequestID != sent.send.RequestID {
		t.Fatalf("Outbox(%q) = %+v, want one SMS from The Sender for %s", usPhone, out, sent.send.RequestID)
	}

	got := h.ask("verify", messages.VerifyRequest{RequestID: sent.send.RequestID, ReceivedCode: out[0].Code, CorrelationID: "signup-42"}, nil)
	want := messages.VerifyResult{Status: messages.StatusVerified, IsVerified: true, RequestID: sent.send.RequestID, CorrelationID: "signup-42", Attempts: 1}
	if got.verify != want {
		t.Errorf("verify(right code) = %v, want %+v", got, want)
	}
	checkNoErrorHeaders(t, "verify", got)
}

func TestVerifyWrongCodeIsRejected(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	requestID, code := h.sendCode(usPhone)
	got := h.ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: otherCode(code)}, nil)
	want := messages.VerifyResult{Status: messages.StatusRejected, RequestID: requestID, Attempts: 1}
	if got.verify != want {
		t.Errorf("verify(wrong code) = %v, want %+v", got, want)
	}
	// A rejection is an answer, not a failure of the service.
	checkNoErrorHeaders(t, "verify(wrong code)", got)
}

// otherCode returns a 4-digit code that is not code.
func otherCode(code string) string {
	n, _ := strconv.Atoi(code)
	return fmt.Sprintf("%04d", (n+1)%10000)
}

// TestInvalidInput: invalid input is answered at once with its code, never
// retryable, never sent upstream, with the correlation_id echoed when it
// could be read.
func TestInvalidInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	oversize := func(valid string) string {
		// Pad a valid request to one byte over the limit.
		pad := messages.MaxMessageSize + 1 - len(valid) - len(`,"pad":""`)
		return strings.TrimSuffix(valid, "}") + `,"pad":"` + strings.Repeat("x", pad) + `"}`
	}
	validSend := `{"phone_number":"+12025550163","correlation_id":"c-1"}`
	validVerify := `{"request_id":"` + unknownReqID + `","received_code":"1234","correlation_id":"c-1"}`
	if n := len(oversize(validSend)); n != messages.MaxMessageSize+1 {
		t.Fatalf("oversize payload is %d bytes, want %d", n, messages.MaxMessageSize+1)
	}
	tests := []struct {
		name            string
		op              string
		payload         string
		wantCode        messages.Code
		wantCorrelation string
	}{
		{name: "send not JSON", op: "send", payload: `phone_number=+12025550163`, wantCode: messages.CodeInvalidRequest},
		{name: "send empty", op: "send", payload: ``, wantCode: messages.CodeInvalidRequest},
		{name: "send truncated JSON", op: "send", payload: `{"phone_number":"+12025550163"`, wantCode: messages.CodeInvalidRequest},
		{name: "send array", op: "send", payload: `["+12025550163"]`, wantCode: messages.CodeInvalidRequest},
		{name: "send string", op: "send", payload: `"+12025550163"`, wantCode: messages.CodeInvalidRequest},
		{name: "send null", op: "send", payload: `null`, wantCode: messages.CodeInvalidRequest},
		{name: "send over 4 KiB", op: "send", payload: oversize(validSend), wantCode: messages.CodeInvalidRequest},
		{name: "send phone_number a number", op: "send", payload: `{"phone_number":12025550163,"correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidRequest, wantCorrelation: "c-1"},
		{name: "send sender_name a number", op: "send", payload: `{"phone_number":"+12025550163","sender_name":7,"correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidRequest, wantCorrelation: "c-1"},
		{name: "send correlation_id too long", op: "send", payload: `{"phone_number":"+12025550163","correlation_id":"` + strings.Repeat("c", 129) + `"}`,
			wantCode: messages.CodeInvalidRequest},
		{name: "send phone missing", op: "send", payload: `{"correlation_id":"c-1"}`, wantCode: messages.CodeInvalidPhoneNumber, wantCorrelation: "c-1"},
		{name: "send phone without plus", op: "send", payload: `{"phone_number":"12025550163","correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidPhoneNumber, wantCorrelation: "c-1"},
		{name: "send phone with spaces", op: "send", payload: `{"phone_number":"+1 202 555 0163"}`, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "send phone with dashes", op: "send", payload: `{"phone_number":"+1-202-555-0163"}`, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "send phone 6 digits", op: "send", payload: `{"phone_number":"+123456"}`, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "send phone 16 digits", op: "send", payload: `{"phone_number":"+1234567890123456"}`, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "send phone leading zero", op: "send", payload: `{"phone_number":"+02025550163"}`, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "send sender empty", op: "send", payload: `{"phone_number":"+12025550163","sender_name":"","correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidSenderName, wantCorrelation: "c-1"},
		{name: "send sender 12 characters", op: "send", payload: `{"phone_number":"+12025550163","sender_name":"ABCDEFGHIJKL"}`,
			wantCode: messages.CodeInvalidSenderName},
		{name: "send sender not showable", op: "send", payload: `{"phone_number":"+12025550163","sender_name":"Señor"}`,
			wantCode: messages.CodeInvalidSenderName},

		{name: "verify not JSON", op: "verify", payload: `1234`, wantCode: messages.CodeInvalidRequest},
		{name: "verify array", op: "verify", payload: `[]`, wantCode: messages.CodeInvalidRequest},
		{name: "verify over 4 KiB", op: "verify", payload: oversize(validVerify), wantCode: messages.CodeInvalidRequest},
		{name: "verify received_code a number", op: "verify", payload: `{"request_id":"` + unknownReqID + `","received_code":1234,"correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidRequest, wantCorrelation: "c-1"},
		{name: "verify request_id missing", op: "verify", payload: `{"received_code":"1234","correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidRequestID, wantCorrelation: "c-1"},
		{name: "verify request_id 31 characters", op: "verify", payload: `{"request_id":"` + unknownReqID[:31] + `","received_code":"1234"}`,
			wantCode: messages.CodeInvalidRequestID},
		{name: "verify request_id 41 characters", op: "verify", payload: `{"request_id":"` + unknownReqID + `012345678","received_code":"1234"}`,
			wantCode: messages.CodeInvalidRequestID},
		{name: "verify request_id with a space", op: "verify", payload: `{"request_id":"` + unknownReqID[:16] + " " + unknownReqID[16:] + `","received_code":"1234"}`,
			wantCode: messages.CodeInvalidRequestID},
		{name: "verify code missing", op: "verify", payload: `{"request_id":"` + unknownReqID + `","correlation_id":"c-1"}`,
			wantCode: messages.CodeInvalidCode, wantCorrelation: "c-1"},
		{name: "verify code 3 digits", op: "verify", payload: `{"request_id":"` + unknownReqID + `","received_code":"123"}`, wantCode: messages.CodeInvalidCode},
		{name: "verify code 5 digits", op: "verify", payload: `{"request_id":"` + unknownReqID + `","received_code":"12345"}`, wantCode: messages.CodeInvalidCode},
		{name: "verify code letters", op: "verify", payload: `{"request_id":"` + unknownReqID + `","received_code":"12a4"}`, wantCode: messages.CodeInvalidCode},
		{name: "verify code fullwidth digits", op: "verify", payload: `{"request_id":"` + unknownReqID + `","received_code":"１２３４"}`, wantCode: messages.CodeInvalidCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.sim.Stats()
			got := h.ask(tt.op, tt.payload, nil)
			what := fmt.Sprintf("%s(%.60q)", tt.op, tt.payload)
			checkFailed(t, what, got, tt.wantCode, false)
			if got.attempts() != 0 || got.correlationID() != tt.wantCorrelation {
				t.Errorf("%s = %v, want 0 attempts and correlation_id %q", what, got, tt.wantCorrelation)
			}
			if after := h.sim.Stats(); after != before {
				t.Errorf("%s: simulator calls went from %+v to %+v, want no upstream call", what, before, after)
			}
		})
	}
}

// TestUpstreamErrors: every way iDenfy can fail a call maps to its contract
// code, retryable flag and micro headers, after the calls the retry policy
// allows (one for what is never retried, several for what is retried until
// the budget runs out).
func TestUpstreamErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.RetryMaxElapsed = 5 * time.Second }))
	const many = 1000 // more faults than any retry budget uses
	sendReq := messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "c-up"}
	verifyReq := messages.VerifyRequest{RequestID: unknownReqID, ReceivedCode: "1234", CorrelationID: "c-up"}
	tests := []struct {
		name          string
		op            string
		faults        []idenfytest.Fault
		wantCode      messages.Code
		wantRetryable bool
		retried       bool   // several calls, else exactly one
		wantMessage   string // part of the error message
		wantDup       bool   // a send's possible_duplicate
	}{
		{name: "send 401", op: "send", faults: []idenfytest.Fault{{Status: 401}}, wantCode: messages.CodeUnauthorized, wantMessage: "HTTP 401"},
		{name: "send 403", op: "send", faults: []idenfytest.Fault{{Status: 403}}, wantCode: messages.CodeUnauthorized, wantMessage: "HTTP 403"},
		{name: "send 402", op: "send", faults: []idenfytest.Fault{{Status: 402}}, wantCode: messages.CodeQuotaExhausted},
		{name: "send 400 PERMISSIONS_ERROR", op: "send", faults: []idenfytest.Fault{{Status: 400, Identifier: "PERMISSIONS_ERROR"}}, wantCode: messages.CodeQuotaExhausted},
		{name: "send 400 BAD_VALUE", op: "send", faults: []idenfytest.Fault{{Status: 400}}, wantCode: messages.CodeUpstreamRejected,
			wantMessage: "BAD_VALUE): Simulated fault: HTTP 400."},
		{name: "send 400 MISSING_VALUE", op: "send", faults: []idenfytest.Fault{{Status: 400, Identifier: "MISSING_VALUE"}}, wantCode: messages.CodeUpstreamRejected,
			wantMessage: "MISSING_VALUE"},
		{name: "send 404", op: "send", faults: []idenfytest.Fault{{Status: 404}}, wantCode: messages.CodeUpstreamRejected, wantMessage: "HTTP 404 NOT_FOUND"},
		{name: "send 422", op: "send", faults: []idenfytest.Fault{{Status: 422}}, wantCode: messages.CodeUpstreamRejected, wantMessage: "HTTP 422"},
		{name: "send 429 past the budget", op: "send", faults: []idenfytest.Fault{{Status: 429, Count: many}},
			wantCode: messages.CodeRateLimited, wantRetryable: true, retried: true, wantMessage: "429"},
		{name: "send 503 past the budget", op: "send", faults: []idenfytest.Fault{{Status: 503, Count: many}},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantMessage: "503"},
		// 500, 502, 504 and dropped connections may have been processed: a
		// send that never got an answer may have texted the user. It keeps
		// the code of its cause and says possible_duplicate (wantDup).
		{name: "send 500 past the budget", op: "send", faults: []idenfytest.Fault{{Status: 500, Count: many}},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantMessage: "500", wantDup: true},
		{name: "send 502 past the budget", op: "send", faults: []idenfytest.Fault{{Status: 502, Count: many}},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantDup: true},
		{name: "send 504 past the budget", op: "send", faults: []idenfytest.Fault{{Status: 504, Count: many}},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantDup: true},
		{name: "send dropped connections past the budget", op: "send", faults: []idenfytest.Fault{{Drop: many}},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantDup: true},
		{name: "send ambiguous attempt then 400", op: "send", faults: []idenfytest.Fault{{Status: 502}, {Status: 400}},
			wantCode: messages.CodeUpstreamRejected, retried: true, wantMessage: "BAD_VALUE", wantDup: true},
		{name: "send 503 is not ambiguous", op: "send", faults: []idenfytest.Fault{{Status: 503}, {Status: 400}},
			wantCode: messages.CodeUpstreamRejected, retried: true, wantMessage: "BAD_VALUE"},

		{name: "verify 401", op: "verify", faults: []idenfytest.Fault{{Status: 401}}, wantCode: messages.CodeUnauthorized},
		{name: "verify 403", op: "verify", faults: []idenfytest.Fault{{Status: 403}}, wantCode: messages.CodeUnauthorized},
		{name: "verify 402", op: "verify", faults: []idenfytest.Fault{{Status: 402}}, wantCode: messages.CodeQuotaExhausted},
		{name: "verify 400 PERMISSIONS_ERROR", op: "verify", faults: []idenfytest.Fault{{Status: 400, Identifier: "PERMISSIONS_ERROR"}}, wantCode: messages.CodeQuotaExhausted},
		{name: "verify unknown request_id", op: "verify", wantCode: messages.CodeUpstreamRejected, wantMessage: "BAD_VALUE): request_id not found."},
		{name: "verify 404", op: "verify", faults: []idenfytest.Fault{{Status: 404}}, wantCode: messages.CodeUpstreamRejected},
		{name: "verify 429 past the budget", op: "verify", faults: []idenfytest.Fault{{Status: 429, Count: many}},
			wantCode: messages.CodeRateLimited, wantRetryable: true, retried: true},
		{name: "verify 503 past the budget", op: "verify", faults: []idenfytest.Fault{{Status: 503, Count: many}},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true},
		// A verify that may have consumed the code cannot be asked again:
		// the caller starts over with a new send.
		{name: "verify 500 past the budget", op: "verify", faults: []idenfytest.Fault{{Status: 500, Count: many}},
			wantCode: messages.CodeOutcomeUnknown, retried: true},
		{name: "verify 504 past the budget", op: "verify", faults: []idenfytest.Fault{{Status: 504, Count: many}},
			wantCode: messages.CodeOutcomeUnknown, retried: true},
		{name: "verify dropped connections past the budget", op: "verify", faults: []idenfytest.Fault{{Drop: many}},
			wantCode: messages.CodeOutcomeUnknown, retried: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.sim.ClearFaults()
			defer h.sim.ClearFaults()
			for _, f := range tt.faults {
				if err := h.sim.InjectFault(f); err != nil {
					t.Fatal(err)
				}
			}
			var payload any = sendReq
			if tt.op == "verify" {
				payload = verifyReq
			}
			before := h.calls(tt.op)
			got := h.ask(tt.op, payload, nil)
			calls := h.calls(tt.op) - before
			what := fmt.Sprintf("%s with faults %+v", tt.op, tt.faults)
			checkFailed(t, what, got, tt.wantCode, tt.wantRetryable)
			if got.correlationID() != "c-up" {
				t.Errorf("%s = %v, want correlation_id c-up", what, got)
			}
			if int64(got.attempts()) != calls {
				t.Errorf("%s = %v: %d attempts, but the simulator saw %d calls", what, got, got.attempts(), calls)
			}
			if tt.retried && calls < 2 || !tt.retried && calls != 1 {
				t.Errorf("%s: %d upstream calls, want %s", what, calls, map[bool]string{true: "more than 1", false: "exactly 1"}[tt.retried])
			}
			if e := got.err(); e != nil && !strings.Contains(e.Message, tt.wantMessage) {
				t.Errorf("%s: message %q, want it to contain %q", what, e.Message, tt.wantMessage)
			}
			if tt.op == "send" && got.send.PossibleDuplicate != tt.wantDup {
				t.Errorf("%s = %v: possible_duplicate %v, want %v", what, got, got.send.PossibleDuplicate, tt.wantDup)
			}
		})
	}
}

// TestUpstreamRejectedMasksDigits: the vendor's message is passed on, with
// any number it quotes masked.
func TestUpstreamRejectedMasksDigits(t *testing.T) {
	t.Parallel()
	p := newUpstreamProxy(t)
	h := newHarness(t, through(t, p))
	p.setIntercept(func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"identifier":"BAD_VALUE","message":"phone_number +12025550163 cannot receive SMS, code 4321"}`)
		return true
	})
	got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil)
	checkFailed(t, "send", got, messages.CodeUpstreamRejected, false)
	const want = "phone_number +*********** cannot receive SMS, code ****"
	if e := got.err(); e != nil && !strings.HasSuffix(e.Message, want) {
		t.Errorf("send: message %q, want it to end with %q", e.Message, want)
	}
	if bytes.Contains(got.msg.Data, []byte("2025550163")) || bytes.Contains(got.msg.Data, []byte("4321")) {
		t.Errorf("send = %v, holds the number or code that iDenfy quoted", got)
	}
}

// TestUnauthorizedCredentials: a worker with credentials iDenfy refuses
// answers unauthorized, calls once, and says so loudly in its logs.
func TestUnauthorizedCredentials(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withClientCredentials("other-key", "other-secret"))
	for _, op := range []string{"send", "verify"} {
		payload := any(messages.SendRequest{PhoneNumber: usPhone})
		if op == "verify" {
			payload = messages.VerifyRequest{RequestID: unknownReqID, ReceivedCode: "1234"}
		}
		got := h.ask(op, payload, nil)
		checkFailed(t, op, got, messages.CodeUnauthorized, false)
		if got.attempts() != 1 || h.calls(op) != 1 {
			t.Errorf("%s = %v with %d simulator calls, want 1 attempt", op, got, h.calls(op))
		}
	}
	waitFor(t, "an error-level log line about the refused account", func() bool {
		for _, line := range logLines(t, h.logs.String()) {
			if line["level"] == "error" && line["code"] == string(messages.CodeUnauthorized) {
				return true
			}
		}
		return false
	})
}

// TestUnreachableUpstream: when iDenfy cannot even be connected to, nothing
// was written, so nothing is ambiguous: upstream_unavailable after retries.
func TestUnreachableUpstream(t *testing.T) {
	t.Parallel()
	// Port 1 (tcpmux) is privileged and out of the ephemeral range: no test
	// server can be there, unlike on a port just closed.
	const dead = "http://127.0.0.1:1"
	h := newHarness(t, withBaseURL(func(string) string { return dead }),
		withConfig(func(c *worker.Config) { c.RetryMaxElapsed = 3 * time.Second }))
	for _, op := range []string{"send", "verify"} {
		payload := any(messages.SendRequest{PhoneNumber: usPhone})
		if op == "verify" {
			payload = messages.VerifyRequest{RequestID: unknownReqID, ReceivedCode: "1234"}
		}
		got := h.ask(op, payload, nil)
		checkFailed(t, op, got, messages.CodeUpstreamUnavailable, true)
		if got.attempts() < 2 {
			t.Errorf("%s = %v, want more than 1 attempt", op, got)
		}
	}
}

// TestResultsEvents: every outcome of the intake, success or not, is
// published on the results subject of its operation, byte for byte the
// body of the reply.
func TestResultsEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	subs := map[string]*nats.Subscription{
		"send":   h.subscribe(h.subj.ResultsSend),
		"verify": h.subscribe(h.subj.ResultsVerify),
	}
	steps := []struct {
		name    string
		op      string
		fault   *idenfytest.Fault
		payload func(requestID, code string) any
		want    messages.Status
	}{
		{name: "send sent", op: "send", want: messages.StatusSent,
			payload: func(_, _ string) any { return messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "ev-sent"} }},
		{name: "send invalid", op: "send", want: messages.StatusFailed,
			payload: func(_, _ string) any { return `{"phone_number":"12025550163","correlation_id":"ev-invalid"}` }},
		{name: "send quota exhausted", op: "send", fault: &idenfytest.Fault{Status: 402}, want: messages.StatusFailed,
			payload: func(_, _ string) any { return messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "ev-quota"} }},
		{name: "verify rejected", op: "verify", want: messages.StatusRejected,
			payload: func(id, code string) any {
				return messages.VerifyRequest{RequestID: id, ReceivedCode: otherCode(code), CorrelationID: "ev-rejected"}
			}},
		{name: "verify verified", op: "verify", want: messages.StatusVerified,
			payload: func(id, code string) any {
				return messages.VerifyRequest{RequestID: id, ReceivedCode: code, CorrelationID: "ev-verified"}
			}},
		{name: "verify verified from memory", op: "verify", want: messages.StatusVerified,
			payload: func(id, code string) any {
				return messages.VerifyRequest{RequestID: id, ReceivedCode: code, CorrelationID: "ev-memory"}
			}},
		{name: "verify invalid", op: "verify", want: messages.StatusFailed,
			payload: func(id, _ string) any {
				return `{"request_id":"` + id + `","received_code":"12","correlation_id":"ev-bad-code"}`
			}},
		{name: "verify upstream unavailable", op: "verify", fault: &idenfytest.Fault{Status: 503, Count: 1000}, want: messages.StatusFailed,
			payload: func(_, _ string) any {
				return messages.VerifyRequest{RequestID: unknownReqID, ReceivedCode: "1234", CorrelationID: "ev-unavailable"}
			}},
	}
	var requestID, code string
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			h.sim.ClearFaults()
			defer h.sim.ClearFaults()
			if step.fault != nil {
				if err := h.sim.InjectFault(*step.fault); err != nil {
					t.Fatal(err)
				}
			}
			got := h.ask(step.op, step.payload(requestID, code), nil)
			if got.status() != step.want {
				t.Errorf("%s = %v, want status %s", step.op, got, step.want)
			}
			if got.correlationID() == "" {
				t.Errorf("%s = %v, want the correlation_id echoed", step.op, got)
			}
			ev := next(t, subs[step.op])
			if !bytes.Equal(ev.Data, got.msg.Data) {
				t.Errorf("event on %s = %s, want the reply %s", ev.Subject, ev.Data, got.msg.Data)
			}
			if step.name == "send sent" {
				requestID = got.send.RequestID
				code, _ = h.sim.LastCode(usPhone)
			}
		})
	}
	for op, sub := range subs {
		if n, _, _ := sub.Pending(); n != 0 {
			t.Errorf("%d more events on the %s results subject than answers", n, op)
		}
	}
}

// TestRequestIdempotency: Nats-Msg-Id is the idempotency key of a request:
// the same key is answered with the first outcome, without calling iDenfy
// again, and a key reused for another request is refused.
func TestRequestIdempotency(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	first := h.ask("send", messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "first"}, header(messages.HeaderMsgID, "k-1"))
	second := h.ask("send", messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "second"}, header(messages.HeaderMsgID, "k-1"))
	if first.send.Status != messages.StatusSent || second.send.Status != messages.StatusSent ||
		second.send.RequestID != first.send.RequestID || second.send.Attempts != first.send.Attempts {
		t.Errorf("send twice with Nats-Msg-Id k-1 = %v, then %v; want the same sent result", first, second)
	}
	if second.send.CorrelationID != "second" {
		t.Errorf("second send = %v, want its own correlation_id echoed", second)
	}
	if n := h.calls("send"); n != 1 {
		t.Errorf("send twice with one Nats-Msg-Id: %d upstream calls, want 1", n)
	}
	if out := h.sim.Outbox(usPhone); len(out) != 1 {
		t.Errorf("Outbox(%q) has %d SMS, want 1", usPhone, len(out))
	}

	reused := []struct {
		name string
		req  messages.SendRequest
	}{
		{"another number", messages.SendRequest{PhoneNumber: usPhone2}},
		{"another sender_name", messages.SendRequest{PhoneNumber: usPhone, SenderName: "Other"}},
	}
	for _, tt := range reused {
		got := h.ask("send", tt.req, header(messages.HeaderMsgID, "k-1"))
		checkFailed(t, "send with Nats-Msg-Id k-1 and "+tt.name, got, messages.CodeInvalidRequest, false)
	}
	if n := h.calls("send"); n != 1 {
		t.Errorf("after reusing the key: %d upstream calls, want 1", n)
	}

	// The key is per operation, and works on verify too: a wrong code asked
	// twice under one key reaches iDenfy once (the verify memory only knows
	// successes).
	wrong := messages.VerifyRequest{RequestID: first.send.RequestID, ReceivedCode: otherCode(mustLastCode(t, h, usPhone))}
	for i := range 2 {
		got := h.ask("verify", wrong, header(messages.HeaderMsgID, "k-1"))
		if got.verify.Status != messages.StatusRejected {
			t.Errorf("verify #%d with Nats-Msg-Id k-1 = %v, want rejected", i+1, got)
		}
	}
	if n := h.calls("verify"); n != 1 {
		t.Errorf("verify twice with one Nats-Msg-Id: %d upstream calls, want 1", n)
	}
}

func mustLastCode(t testing.TB, h *harness, phone string) string {
	t.Helper()
	code, ok := h.sim.LastCode(phone)
	if !ok {
		t.Fatalf("no code in the outbox of %s", phone)
	}
	return code
}

// TestRequestIdempotencyConcurrent: a request whose key is being worked on
// waits for that outcome instead of calling iDenfy too. The first call is
// held at the proxy until the second request is in the worker's pool.
func TestRequestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	p := newUpstreamProxy(t)
	h := newHarness(t, through(t, p), withAttemptTimeout(time.Minute))
	p.hold()
	hdr := header(messages.HeaderMsgID, "k-busy")
	first := h.askAsync("send", messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "first"}, hdr)
	waitFor(t, "the first send to reach iDenfy", func() bool { n, _ := p.counts(); return n == 1 })
	second := h.askAsync("send", messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "second"}, hdr)
	waitFor(t, "the second send to be worked on too", func() bool {
		var stats micro.Stats
		controlRequest(t, h.nc, micro.StatsVerb, &stats)
		return statsData(t, stats)["send"].InFlight == 2
	})
	p.release()

	a, b := <-first, <-second
	if a.err != nil || b.err != nil {
		t.Fatalf("requests failed: %v, %v", a.err, b.err)
	}
	if a.x.send.Status != messages.StatusSent || b.x.send.RequestID != a.x.send.RequestID || b.x.send.CorrelationID != "second" {
		t.Errorf("concurrent sends with one Nats-Msg-Id = %v and %v, want the same sent result", a.x, b.x)
	}
	if n := h.calls("send"); n != 1 {
		t.Errorf("concurrent sends with one Nats-Msg-Id: %d upstream calls, want 1", n)
	}
}

// asyncAnswer is the outcome of askAsync.
type asyncAnswer struct {
	x   exchange
	err error
}

// askAsync is ask from another goroutine: the answer arrives on the channel.
// It may be called from any goroutine, and fails nothing itself.
func (h *harness) askAsync(op string, payload any, hdr nats.Header) <-chan asyncAnswer {
	ch := make(chan asyncAnswer, 1)
	subject := h.subj.Send
	if op == "verify" {
		subject = h.subj.Verify
	}
	data, err := json.Marshal(payload)
	if err != nil {
		ch <- asyncAnswer{err: err}
		return ch
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		msg, err := h.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: data, Header: hdr})
		if err != nil {
			ch <- asyncAnswer{err: err}
			return
		}
		x := exchange{msg: msg}
		target := any(&x.send)
		if op == "verify" {
			target = &x.verify
		}
		ch <- asyncAnswer{x: x, err: json.Unmarshal(msg.Data, target)}
	}()
	return ch
}

// TestVerifyMemory: a request_id once verified stays verified for the same
// code, answered without iDenfy (which would say false now); another code
// is not verified.
func TestVerifyMemory(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	requestID, code := h.sendCode(usPhone)
	req := messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}
	if got := h.ask("verify", req, nil); got.verify.Status != messages.StatusVerified || got.verify.Attempts != 1 {
		t.Fatalf("verify(right code) = %v, want verified after 1 attempt", got)
	}

	req.CorrelationID = "again"
	got := h.ask("verify", req, nil)
	want := messages.VerifyResult{Status: messages.StatusVerified, IsVerified: true, RequestID: requestID, CorrelationID: "again", Attempts: 0}
	if got.verify != want {
		t.Errorf("verify(same code again) = %v, want %+v", got, want)
	}
	checkNoErrorHeaders(t, "verify(same code again)", got)
	if n := h.calls("verify"); n != 1 {
		t.Errorf("verify twice with the right code: %d upstream calls, want 1", n)
	}

	// Another code is wrong (iDenfy would now refuse any code), whether or
	// not the worker asks iDenfy to hear it.
	got = h.ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: otherCode(code)}, nil)
	if got.verify.Status != messages.StatusRejected || got.verify.IsVerified || got.verify.Error != nil {
		t.Errorf("verify(another code) = %v, want rejected", got)
	}
}

// TestMicroDiscovery: the intake is a NATS micro service that `nats micro`
// finds, describes and measures.
func TestMicroDiscovery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	requestID, code := h.sendCode(usPhone)
	h.ask("send", messages.SendRequest{PhoneNumber: usPhone2}, nil)
	h.ask("send", `{"phone_number":"bad"}`, nil)
	h.ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, nil)

	var ping micro.Ping
	controlRequest(t, h.nc, micro.PingVerb, &ping)
	if ping.Name != messages.ServiceName || ping.Type != micro.PingResponseType || ping.Version != worker.Version {
		t.Errorf("PING = %+v, want %s version %s", ping, messages.ServiceName, worker.Version)
	}

	var info micro.Info
	controlRequest(t, h.nc, micro.InfoVerb, &info)
	if info.Name != messages.ServiceName || info.Description == "" || info.Metadata["worker_id"] != h.w.ID() ||
		info.Metadata["prefix"] != messages.DefaultPrefix {
		t.Errorf("INFO = %+v, want %s with a description, worker_id %s and prefix %s", info, messages.ServiceName, h.w.ID(), messages.DefaultPrefix)
	}
	wantEndpoints := map[string]string{"send": h.subj.Send, "verify": h.subj.Verify}
	if len(info.Endpoints) != len(wantEndpoints) {
		t.Errorf("INFO endpoints = %+v, want send and verify", info.Endpoints)
	}
	for _, e := range info.Endpoints {
		if e.Subject != wantEndpoints[e.Name] || e.QueueGroup != messages.QueueGroup {
			t.Errorf("INFO endpoint %+v, want subject %q in queue group %s", e, wantEndpoints[e.Name], messages.QueueGroup)
		}
	}

	// The counts are recorded just after each answer is sent.
	want := map[string]endpointData{"send": {Completed: 3, Failed: 1}, "verify": {Completed: 1, Failed: 0}}
	var got map[string]endpointData
	waitFor(t, "STATS to count every request", func() bool {
		var stats micro.Stats
		controlRequest(t, h.nc, micro.StatsVerb, &stats)
		got = statsData(t, stats)
		return got["send"] == want["send"] && got["verify"] == want["verify"]
	})
	var stats micro.Stats
	controlRequest(t, h.nc, micro.StatsVerb, &stats)
	for _, e := range stats.Endpoints {
		if e.QueueGroup != messages.QueueGroup || e.NumRequests != int(want[e.Name].Completed) {
			t.Errorf("STATS endpoint %s = %+v, want %d requests in queue group %s", e.Name, e, want[e.Name].Completed, messages.QueueGroup)
		}
		// The bad number was answered in micro's callback: micro counts it.
		if e.Name == "send" && (e.NumErrors != 1 || !strings.Contains(e.LastError, string(messages.CodeInvalidPhoneNumber))) {
			t.Errorf("STATS endpoint send: num_errors %d, last_error %q; want 1 and %s", e.NumErrors, e.LastError, messages.CodeInvalidPhoneNumber)
		}
	}
}

// endpointData is what the worker adds to an endpoint's micro stats.
type endpointData struct {
	InFlight  int64 `json:"in_flight"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
}

func statsData(t testing.TB, stats micro.Stats) map[string]endpointData {
	t.Helper()
	data := make(map[string]endpointData)
	for _, e := range stats.Endpoints {
		var d endpointData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatalf("STATS data of %s = %s: %v", e.Name, e.Data, err)
		}
		data[e.Name] = d
	}
	return data
}

// controlRequest asks the idenfy-phone service a micro control question
// and decodes the first answer into v.
func controlRequest(t testing.TB, nc *nats.Conn, verb micro.Verb, v any) {
	t.Helper()
	subject, err := micro.ControlSubject(verb, messages.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, nil, 10*time.Second)
	if err != nil {
		t.Fatalf("request on %s: %v", subject, err)
	}
	decodeInto(t, msg.Data, v)
}

// controlAll asks every instance of the idenfy-phone service a micro
// control question and returns the answers of n instances.
func controlAll[T any](t testing.TB, nc *nats.Conn, verb micro.Verb, n int) []T {
	t.Helper()
	subject, err := micro.ControlSubject(verb, messages.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	answers := make([]T, n)
	for i := range answers {
		decodeInto(t, next(t, sub).Data, &answers[i])
	}
	return answers
}

// TestCustomPrefix: WORKER_SUBJECT_PREFIX moves every subject.
func TestCustomPrefix(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.Prefix = "acme.verify" }))
	if h.subj.Send != "acme.verify.send" {
		t.Fatalf("harness subjects %+v, want them under acme.verify", h.subj)
	}
	events := h.subscribe("acme.verify.results.*")
	requestID, code := h.sendCode(usPhone)
	if ev := next(t, events); ev.Subject != "acme.verify.results.send" {
		t.Errorf("send event on %s, want acme.verify.results.send", ev.Subject)
	}
	got := h.ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, nil)
	if got.verify.Status != messages.StatusVerified {
		t.Errorf("verify on acme.verify.verify = %v, want verified", got)
	}
	if ev := next(t, events); ev.Subject != "acme.verify.results.verify" {
		t.Errorf("verify event on %s, want acme.verify.results.verify", ev.Subject)
	}
	_, err := h.nc.Request(messages.NewSubjects(messages.DefaultPrefix).Send, []byte(`{"phone_number":"+12025550163"}`), 5*time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request on the default send subject: %v, want %v", err, nats.ErrNoResponders)
	}
}

// TestConcurrentRequestsOverlap: requests do not queue behind each other's
// iDenfy calls. The proxy holds every call until 50 are in flight at once,
// which only happens if the worker runs them concurrently.
func TestConcurrentRequestsOverlap(t *testing.T) {
	t.Parallel()
	const n = 50
	p := newUpstreamProxy(t)
	h := newHarness(t, through(t, p), withAttemptTimeout(time.Minute),
		withConfig(func(c *worker.Config) { c.Concurrency = n }))
	p.hold()
	answers := make([]<-chan asyncAnswer, n)
	for i := range answers {
		answers[i] = h.askAsync("send", messages.SendRequest{PhoneNumber: fmt.Sprintf("+1202555%04d", i)}, nil)
	}
	// A request waiting for the pool before all are in flight means the
	// pool has fewer places than configured: fail at once rather than wait.
	waitFor(t, fmt.Sprintf("%d iDenfy calls in flight at once, or a full pool", n), func() bool {
		now, _ := p.counts()
		return now == n || h.metric("idenfy_worker_pool_saturated_total") > 0
	})
	if now, _ := p.counts(); now != n {
		t.Fatalf("the pool is full with %d of %d requests in flight, with concurrency %d", now, n, n)
	}
	p.release()
	for i, ch := range answers {
		a := <-ch
		if a.err != nil || a.x.send.Status != messages.StatusSent {
			t.Errorf("send #%d = %v, %v; want sent", i, a.x, a.err)
		}
	}
	if _, most := p.counts(); most != n {
		t.Errorf("at most %d calls in flight, want %d", most, n)
	}
}

// TestConcurrencyBound: WORKER_CONCURRENCY bounds the iDenfy calls in
// flight. With the first two calls held, a third request waits for a place
// in the pool (the pool-saturated metric counts it) instead of calling.
func TestConcurrencyBound(t *testing.T) {
	t.Parallel()
	const n = 10
	p := newUpstreamProxy(t)
	h := newHarness(t, through(t, p), withAttemptTimeout(time.Minute),
		withConfig(func(c *worker.Config) { c.Concurrency = 2 }))
	p.hold()
	answers := make([]<-chan asyncAnswer, n)
	for i := range answers {
		answers[i] = h.askAsync("send", messages.SendRequest{PhoneNumber: fmt.Sprintf("+1202555%04d", i)}, nil)
	}
	waitFor(t, "2 calls in flight and a request waiting for the pool, or more calls", func() bool {
		now, most := p.counts()
		return most > 2 || now == 2 && h.metric("idenfy_worker_pool_saturated_total") >= 1
	})
	if _, most := p.counts(); most != 2 {
		t.Fatalf("%d calls in flight at once with concurrency 2", most)
	}
	p.release()
	for i, ch := range answers {
		if a := <-ch; a.err != nil || a.x.send.Status != messages.StatusSent {
			t.Errorf("send #%d = %v, %v; want sent", i, a.x, a.err)
		}
	}
	if _, most := p.counts(); most != 2 {
		t.Errorf("at most %d calls in flight with concurrency 2, want 2", most)
	}
	if got := h.calls("send"); got != n {
		t.Errorf("%d upstream calls, want %d", got, n)
	}
}

// TestQueueGroupSplitsRequests: two workers on one NATS share the
// requests through the queue group; each request is answered once.
func TestQueueGroupSplitsRequests(t *testing.T) {
	t.Parallel()
	h1 := newHarness(t)
	h2 := newHarness(t, sharing(h1))
	// Each request goes to either worker at random: 40 all landing on one
	// happens once in 2^39 runs.
	const n = 40
	events := h1.subscribe(h1.subj.ResultsSend)
	for i := range n {
		got := h1.ask("send", messages.SendRequest{PhoneNumber: fmt.Sprintf("+1202555%04d", i)}, nil)
		if got.send.Status != messages.StatusSent {
			t.Fatalf("send #%d = %v, want sent", i, got)
		}
	}
	for range n {
		next(t, events)
	}
	if extra, _, _ := events.Pending(); extra != 0 || h1.calls("send") != n {
		t.Errorf("%d requests: %d more events and %d upstream calls, want every request answered once", n, extra, h1.calls("send"))
	}
	var completed map[string]int64
	waitFor(t, "both workers' stats to count every request", func() bool {
		completed = make(map[string]int64)
		var sum int64
		for _, s := range controlAll[micro.Stats](t, h1.nc, micro.StatsVerb, 2) {
			c := statsData(t, s)["send"].Completed
			completed[s.Metadata["worker_id"]] = c
			sum += c
		}
		return sum == n
	})
	for _, h := range []*harness{h1, h2} {
		if completed[h.w.ID()] == 0 {
			t.Errorf("worker %s answered none of %d requests (%v)", h.w.ID(), n, completed)
		}
	}
}

// TestShutdownFinishesRequestsInFlight: Shutdown stops taking requests but
// lets the iDenfy calls under way finish and answers them; afterwards
// nobody answers on the subjects.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	const n = 10
	p := newUpstreamProxy(t)
	h := newHarness(t, through(t, p), withAttemptTimeout(time.Minute),
		withConfig(func(c *worker.Config) { c.ShutdownTimeout = 10 * time.Minute }))
	p.hold()
	answers := make([]<-chan asyncAnswer, n)
	for i := range answers {
		answers[i] = h.askAsync("send", messages.SendRequest{PhoneNumber: fmt.Sprintf("+1202555%04d", i)}, nil)
	}
	waitFor(t, fmt.Sprintf("%d calls in flight", n), func() bool { now, _ := p.counts(); return now == n })

	shutdown := make(chan error, 1)
	go func() { shutdown <- h.w.Shutdown(context.Background()) }()
	// Once the service stopped answering its control subjects, shutdown
	// began: the held calls are released into a stopping worker.
	ping, _ := micro.ControlSubject(micro.PingVerb, messages.ServiceName, "")
	waitFor(t, "the micro service to stop", func() bool {
		_, err := h.nc.Request(ping, nil, 5*time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with %d requests in flight", err, n)
	default:
	}
	p.release()

	for i, ch := range answers {
		if a := <-ch; a.err != nil || a.x.send.Status != messages.StatusSent {
			t.Errorf("send #%d in flight at shutdown = %v, %v; want sent", i, a.x, a.err)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return within 30s of its requests being answered")
	}

	// The endpoints were drained; once the server has seen that (a flush
	// of the worker's connection), a request finds nobody.
	if err := h.cfg.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err := h.nc.Request(h.subj.Send, []byte(`{"phone_number":"+12025550163"}`), 5*time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request after Shutdown: %v, want %v", err, nats.ErrNoResponders)
	}
	if got := h.calls("send"); got != n {
		t.Errorf("%d upstream calls, want %d", got, n)
	}
}

// TestShutdownAnswersWaitingRequest: a request waiting between attempts is
// not kept until its retry budget runs out: Shutdown answers it
// shutting_down (retryable), and returns.
func TestShutdownAnswersWaitingRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withWallClock(), withConfig(func(c *worker.Config) {
		c.RetryMaxElapsed = 10 * time.Minute
		c.ShutdownTimeout = 10 * time.Minute
	}))
	if err := h.sim.InjectFault(idenfytest.Fault{Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	answer := h.askAsync("send", messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "c-stop"}, nil)
	waitFor(t, "a first attempt", func() bool { return h.calls("send") >= 1 })

	shutdown := make(chan error, 1)
	go func() { shutdown <- h.w.Shutdown(context.Background()) }()
	var a asyncAnswer
	select {
	case a = <-answer:
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s of Shutdown")
	}
	if a.err != nil {
		t.Fatal(a.err)
	}
	checkFailed(t, "send during shutdown", a.x, messages.CodeShuttingDown, true)
	if a.x.send.CorrelationID != "c-stop" || a.x.send.Attempts < 1 {
		t.Errorf("send during shutdown = %v, want correlation_id c-stop and the attempts made", a.x)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return within 30s")
	}
}

// TestCountryAllowList: with an allow-list, numbers of other countries are
// refused before any upstream call.
func TestCountryAllowList(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) { c.AllowedCountries = []string{"US"} }))
	tests := []struct {
		name  string
		phone string
		want  messages.Code // empty: sent
	}{
		{name: "US", phone: usPhone},
		{name: "GB", phone: gbPhone, want: messages.CodeCountryNotAllowed},
		{name: "Lithuania", phone: "+37060012345", want: messages.CodeCountryNotAllowed},
		// +1 is shared: the leading digits tell Canada from the US.
		{name: "Canada shares +1", phone: "+16135550123", want: messages.CodeCountryNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.calls("send")
			got := h.ask("send", messages.SendRequest{PhoneNumber: tt.phone, CorrelationID: "c-country"}, nil)
			calls := h.calls("send") - before
			what := fmt.Sprintf("send(%q)", tt.phone)
			if tt.want == "" {
				if got.send.Status != messages.StatusSent || calls != 1 {
					t.Errorf("%s = %v after %d upstream calls, want sent", what, got, calls)
				}
				return
			}
			checkFailed(t, what, got, tt.want, false)
			if calls != 0 || got.send.Attempts != 0 || got.send.CorrelationID != "c-country" {
				t.Errorf("%s = %v after %d upstream calls, want refused without calling", what, got, calls)
			}
		})
	}
}

// TestSendLimit: a number may be texted 3 times in 10 minutes; the 4th send
// is refused and says when to come back, and after that it may send again.
func TestSendLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *worker.Config) {
		c.SendLimits = []worker.SendLimit{{Count: 3, Window: 10 * time.Minute}}
	}))
	for i := range 3 {
		if got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil); got.send.Status != messages.StatusSent {
			t.Fatalf("send #%d = %v, want sent", i+1, got)
		}
	}
	h.clock.Advance(time.Minute)
	got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone, CorrelationID: "c-4"}, nil)
	checkFailed(t, "send #4", got, messages.CodeTooManySends, true)
	// The first send frees its place 9 minutes from now; the counters keep
	// whole seconds.
	if e := got.err(); e != nil {
		_, after, _ := strings.Cut(e.Message, "try again in ")
		if d, err := time.ParseDuration(after); err != nil || d < 9*time.Minute-time.Second || d > 9*time.Minute {
			t.Errorf("send #4: message %q, want it to say when: try again in 9m0s", e.Message)
		}
	}
	if n := h.calls("send"); n != 3 || got.send.Attempts != 0 || got.send.CorrelationID != "c-4" {
		t.Errorf("send #4 = %v with %d upstream calls in all, want refused without calling", got, n)
	}
	if got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone2}, nil); got.send.Status != messages.StatusSent {
		t.Errorf("send(%q) = %v, want sent: the limit is per number", usPhone2, got)
	}

	h.clock.Advance(9*time.Minute + time.Second)
	if got := h.ask("send", messages.SendRequest{PhoneNumber: usPhone}, nil); got.send.Status != messages.StatusSent {
		t.Errorf("send after the window = %v, want sent", got)
	}
}

// TestLogsHoldNoSecrets runs real traffic, successes and failures, and
// checks what the worker logged and published: never the API secret or the
// basic-auth header, never a full phone number, never a verification code;
// numbers appear masked.
//
// Secrets and numbers are looked for in the raw text. A 4-digit code could
// also turn up by chance inside random identifiers (a request_id is 32 hex
// digits), so codes are looked for in each log line parsed as JSON: every
// string value, except the fields holding such identifiers (request_id,
// worker_id, key), which are checked to be what they claim instead.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	events := h.subscribe(strings.TrimSuffix(h.subj.ResultsSend, "send") + "*")
	// Not +12025550163: the contract's example number, which error
	// messages quote.
	phone1, phone2, phone3 := "+12025550188", "+12025550199", "+447700900456"
	phones := []string{phone1, phone2, phone3}

	asked := 0
	ask := func(op string, payload any, hdr nats.Header) {
		t.Helper()
		h.ask(op, payload, hdr)
		asked++
	}
	requestID, code := h.sendCode(phone1)
	requestID2, code2 := h.sendCode(phone2)
	asked += 2
	wrong := otherCode(code)
	codes := []string{code, code2, wrong}
	ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: wrong}, nil)
	ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, header(messages.HeaderMsgID, "v-1"))
	ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, header(messages.HeaderMsgID, "v-1"))
	ask("verify", messages.VerifyRequest{RequestID: requestID, ReceivedCode: code}, nil)
	ask("verify", `{"request_id":"`+requestID+`","received_code":"`+code+`5"}`, nil)
	ask("send", `{"phone_number":"`+phone2[1:]+`"}`, nil)
	ask("send", `{"phone_number":"`+phone2+`","sender_name":"Señor"}`, nil)
	ask("send", `{"phone_number":`+phone2[1:]+`}`, nil)
	faults := []idenfytest.Fault{{Status: 402}, {Status: 401}, {Status: 400}, {Drop: 1}, {Status: 503, Count: 1000}}
	for _, f := range faults {
		for _, op := range []string{"send", "verify"} {
			h.sim.ClearFaults()
			if err := h.sim.InjectFault(f); err != nil {
				t.Fatal(err)
			}
			if op == "send" {
				ask("send", messages.SendRequest{PhoneNumber: phone3}, nil)
			} else {
				ask("verify", messages.VerifyRequest{RequestID: requestID2, ReceivedCode: code2}, nil)
			}
		}
	}
	h.sim.ClearFaults()
	// The outcome line of a request, the one with elapsed_ms, is written
	// just after its answer. What is checked here is the logs themselves,
	// so this waits for their lines, not for the outcomes metric: that is
	// counted just before each line is written.
	waitFor(t, "the outcome lines of every request", func() bool {
		return strings.Count(h.logs.String(), `"elapsed_ms"`) == asked
	})

	auth := base64.StdEncoding.EncodeToString([]byte(idenfytest.DefaultAPIKey + ":" + idenfytest.DefaultAPISecret))
	secrets := []string{idenfytest.DefaultAPISecret, auth}
	for _, p := range phones {
		secrets = append(secrets, p, p[1:])
	}
	var published []string
	requestIDs := map[string]bool{requestID: true, requestID2: true}
	for range asked {
		msg := next(t, events)
		published = append(published, string(msg.Data))
		var res messages.SendResult
		decodeInto(t, msg.Data, &res)
		requestIDs[res.RequestID] = true
	}
	logs := h.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain %q", s)
		}
		for _, ev := range published {
			if strings.Contains(ev, s) {
				t.Errorf("result %s contains %q", ev, s)
			}
		}
	}
	if masked := "+1********88"; !strings.Contains(logs, masked) {
		t.Errorf("the logs do not show the masked number %s", masked)
	}

	identifiers := map[string]func(string) bool{
		"request_id": func(v string) bool { return requestIDs[v] },
		"worker_id":  func(v string) bool { return v == h.w.ID() },
		"key":        func(v string) bool { return len(v) == 12 && strings.Trim(v, "0123456789abcdef") == "" },
	}
	lines := logLines(t, logs)
	for _, ev := range published {
		var v map[string]any
		if err := json.Unmarshal([]byte(ev), &v); err != nil {
			t.Fatalf("result %s: %v", ev, err)
		}
		lines = append(lines, v)
	}
	for _, line := range lines {
		for _, f := range stringValues(line, "") {
			if ok, special := identifiers[f.name]; special {
				if !ok(f.value) {
					t.Errorf("field %s = %q in %v, want a known identifier", f.name, f.value, line)
				}
				continue
			}
			for _, c := range codes {
				if strings.Contains(f.value, c) {
					t.Errorf("field %s = %q holds the code %s (in %v)", f.name, f.value, c, line)
				}
			}
		}
	}
}

// logLines parses JSON log output, one object a line.
func logLines(t testing.TB, logs string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		lines = append(lines, v)
	}
	return lines
}

// field is a string value found in a JSON object, with its field name.
type field struct{ name, value string }

// stringValues returns every string in v with its field name, nested
// objects included; the name of an array element is the array's.
func stringValues(v any, name string) []field {
	switch v := v.(type) {
	case string:
		return []field{{name, v}}
	case map[string]any:
		var out []field
		for k, e := range v {
			out = append(out, stringValues(e, k)...)
		}
		return out
	case []any:
		var out []field
		for _, e := range v {
			out = append(out, stringValues(e, name)...)
		}
		return out
	}
	return nil
}
