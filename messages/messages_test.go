package messages_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// TestResultJSON marshals results and compares them with the shapes in the
// README ("Calling it from a service"), field names included.
func TestResultJSON(t *testing.T) {
	tests := []struct {
		name   string
		result any
		want   string
	}{
		{
			name: "send result",
			result: messages.SendResult{Status: messages.StatusSent, RequestID: validRequestID,
				CorrelationID: "signup-42", Attempts: 1},
			want: `{"status": "sent", "request_id": "3d50e1584e0946e789e0185c009aaadf", "correlation_id": "signup-42", "attempts": 1}`,
		},
		{
			name:   "send result without correlation",
			result: messages.SendResult{Status: messages.StatusSent, RequestID: validRequestID, Attempts: 1},
			want:   `{"status": "sent", "request_id": "3d50e1584e0946e789e0185c009aaadf", "attempts": 1}`,
		},
		{
			name: "send result after an ambiguous attempt",
			result: messages.SendResult{Status: messages.StatusSent, RequestID: validRequestID,
				CorrelationID: "signup-42", Attempts: 2, PossibleDuplicate: true},
			want: `{"status": "sent", "request_id": "3d50e1584e0946e789e0185c009aaadf", "correlation_id": "signup-42", "attempts": 2, "possible_duplicate": true}`,
		},
		{
			name: "verify result",
			result: messages.VerifyResult{Status: messages.StatusVerified, IsVerified: true, RequestID: validRequestID,
				CorrelationID: "signup-42", Attempts: 1},
			want: `{"status": "verified", "is_verified": true, "request_id": "3d50e1584e0946e789e0185c009aaadf", "correlation_id": "signup-42", "attempts": 1}`,
		},
		{
			name: "verify rejected keeps is_verified false",
			result: messages.VerifyResult{Status: messages.StatusRejected, RequestID: validRequestID,
				CorrelationID: "signup-42", Attempts: 1},
			want: `{"status": "rejected", "is_verified": false, "request_id": "3d50e1584e0946e789e0185c009aaadf", "correlation_id": "signup-42", "attempts": 1}`,
		},
		{
			name: "verify answered from memory has 0 attempts",
			result: messages.VerifyResult{Status: messages.StatusVerified, IsVerified: true, RequestID: validRequestID,
				Attempts: 0},
			want: `{"status": "verified", "is_verified": true, "request_id": "3d50e1584e0946e789e0185c009aaadf", "attempts": 0}`,
		},
		{
			name: "send failure",
			result: messages.FailedSend("signup-42", 3,
				messages.NewError(messages.CodeUpstreamUnavailable, "iDenfy answered 503 three times over 20s")),
			want: `{"status": "failed", "correlation_id": "signup-42", "attempts": 3,
			        "error": {"code": "upstream_unavailable", "message": "iDenfy answered 503 three times over 20s", "retryable": true}}`,
		},
		{
			name:   "send failure on invalid input",
			result: messages.FailedSend("", 0, messages.NewError(messages.CodeInvalidPhoneNumber, "bad")),
			want:   `{"status": "failed", "attempts": 0, "error": {"code": "invalid_phone_number", "message": "bad", "retryable": false}}`,
		},
		{
			name: "verify failure",
			result: messages.FailedVerify(validRequestID, "signup-42", 2,
				messages.NewError(messages.CodeOutcomeUnknown, "an earlier attempt may have consumed the code")),
			want: `{"status": "failed", "is_verified": false, "request_id": "3d50e1584e0946e789e0185c009aaadf", "correlation_id": "signup-42", "attempts": 2,
			        "error": {"code": "outcome_unknown", "message": "an earlier attempt may have consumed the code", "retryable": false}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := json.Marshal(tt.result)
			if err != nil {
				t.Fatalf("json.Marshal(%+v) = %v", tt.result, err)
			}
			var got, want map[string]any
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", data, err)
			}
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatalf("bad test JSON %s: %v", tt.want, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("json.Marshal(%+v) = %s, mismatch (-want +got):\n%s", tt.result, data, diff)
			}
		})
	}
}

// TestResultRoundTrip checks that a caller decoding a result gets back what
// the worker encoded.
func TestResultRoundTrip(t *testing.T) {
	in := messages.FailedVerify(validRequestID, "c", 3, messages.NewError(messages.CodeRateLimited, "slow down"))
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("json.Marshal(%+v) = %v", in, err)
	}
	var out messages.VerifyResult
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", data, err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip of %s mismatch (-want +got):\n%s", data, diff)
	}
}

func TestFailedResults(t *testing.T) {
	e := messages.NewError(messages.CodeExpired, "too old")
	if got, want := messages.FailedSend("c", 1, e), (messages.SendResult{Status: messages.StatusFailed, CorrelationID: "c", Attempts: 1, Error: e}); !cmp.Equal(got, want) {
		t.Errorf("FailedSend(%q, 1, %v) = %+v, want %+v", "c", e, got, want)
	}
	want := messages.VerifyResult{Status: messages.StatusFailed, RequestID: "r", CorrelationID: "c", Attempts: 2, Error: e}
	if got := messages.FailedVerify("r", "c", 2, e); !cmp.Equal(got, want) {
		t.Errorf("FailedVerify(%q, %q, 2, %v) = %+v, want %+v", "r", "c", e, got, want)
	}
}

func TestErrorIsAGoError(t *testing.T) {
	var err error = fmt.Errorf("decoding: %w", messages.NewError(messages.CodeInvalidCode, "not 4 digits"))
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != messages.CodeInvalidCode {
		t.Fatalf("errors.As(%v, *messages.Error) = %v, want code %s", err, e, messages.CodeInvalidCode)
	}
	if got, want := err.Error(), "decoding: invalid_code: not 4 digits"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
