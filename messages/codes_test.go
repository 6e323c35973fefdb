package messages_test

import (
	"testing"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// TestCodes holds every code to the exact string of the error code table in
// the README ("How it behaves on failures"), in its order: the strings are
// public interface.
func TestCodes(t *testing.T) {
	want := []struct {
		code         messages.Code
		str          string
		retryable    bool
		invalidInput bool
	}{
		{messages.CodeInvalidRequest, "invalid_request", false, true},
		{messages.CodeInvalidPhoneNumber, "invalid_phone_number", false, true},
		{messages.CodeInvalidSenderName, "invalid_sender_name", false, true},
		{messages.CodeInvalidRequestID, "invalid_request_id", false, true},
		{messages.CodeInvalidCode, "invalid_code", false, true},
		{messages.CodeUnauthorized, "unauthorized", false, false},
		{messages.CodeQuotaExhausted, "quota_exhausted", false, false},
		{messages.CodeUpstreamRejected, "upstream_rejected", false, false},
		{messages.CodeRateLimited, "rate_limited", true, false},
		{messages.CodeUpstreamUnavailable, "upstream_unavailable", true, false},
		// Asking again after an unknown outcome may text the user again or
		// meet a code already consumed: the caller starts over instead.
		{messages.CodeOutcomeUnknown, "outcome_unknown", false, false},
		{messages.CodeExpired, "expired", true, false},
		{messages.CodeCountryNotAllowed, "country_not_allowed", false, false},
		{messages.CodeTooManySends, "too_many_sends", true, false},
		{messages.CodeNumberNotAllowed, "number_not_allowed", false, false},
		// A paused range lifts by itself, but a caller that retries on its
		// own is what a pumping bot does: the code says do not.
		{messages.CodeSuspectedFraud, "suspected_fraud", false, false},
		{messages.CodeShuttingDown, "shutting_down", true, false},
	}
	if len(messages.Codes) != len(want) {
		t.Fatalf("len(Codes) = %d, want %d: %v", len(messages.Codes), len(want), messages.Codes)
	}
	seen := make(map[messages.Code]bool)
	for i, w := range want {
		if got := messages.Codes[i]; got != w.code {
			t.Errorf("Codes[%d] = %q, want %q", i, got, w.code)
		}
		if string(w.code) != w.str {
			t.Errorf("Code %q, want the string %q of the README", w.code, w.str)
		}
		if seen[w.code] {
			t.Errorf("Code %q appears twice", w.code)
		}
		seen[w.code] = true
		if got := w.code.Retryable(); got != w.retryable {
			t.Errorf("Code(%q).Retryable() = %v, want %v", w.code, got, w.retryable)
		}
		if got := w.code.IsInvalidInput(); got != w.invalidInput {
			t.Errorf("Code(%q).IsInvalidInput() = %v, want %v", w.code, got, w.invalidInput)
		}
		if e := messages.NewError(w.code, "m"); e.Retryable != w.retryable || e.Code != w.code || e.Message != "m" {
			t.Errorf("NewError(%q, %q) = %+v, want Retryable %v", w.code, "m", e, w.retryable)
		}
	}
}

func TestUnknownCode(t *testing.T) {
	c := messages.Code("no_such_code")
	if c.Retryable() || c.IsInvalidInput() {
		t.Errorf("Code(%q): Retryable() = %v, IsInvalidInput() = %v, want false, false", c, c.Retryable(), c.IsInvalidInput())
	}
}
