package worker

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// TestContractError holds the one table from errors to contract codes, for
// the errors the simulator cannot produce as well as those it can.
func TestContractError(t *testing.T) {
	timeout := &idenfy.TransportError{Op: "send-sms", Written: true, Err: context.DeadlineExceeded}
	refused := &idenfy.TransportError{Op: "send-sms", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name          string
		err           error
		wantCode      messages.Code
		wantRetryable bool // of the code
		retried       bool // whether the attempt is retried
		wantMessage   string
	}{
		{name: "401", err: &idenfy.APIError{Status: 401, Message: "Invalid username/password."}, wantCode: messages.CodeUnauthorized, wantMessage: "HTTP 401"},
		{name: "403", err: &idenfy.APIError{Status: 403}, wantCode: messages.CodeUnauthorized, wantMessage: "HTTP 403"},
		{name: "402", err: &idenfy.APIError{Status: 402}, wantCode: messages.CodeQuotaExhausted},
		{name: "400 PERMISSIONS_ERROR", err: &idenfy.APIError{Status: 400, Identifier: "PERMISSIONS_ERROR"}, wantCode: messages.CodeQuotaExhausted},
		{name: "400 BAD_VALUE", err: &idenfy.APIError{Status: 400, Identifier: "BAD_VALUE", Message: "phone_number: ***"},
			wantCode: messages.CodeUpstreamRejected, wantMessage: "(HTTP 400 BAD_VALUE): phone_number: ***"},
		{name: "418 without identifier", err: &idenfy.APIError{Status: 418, Message: "teapot"}, wantCode: messages.CodeUpstreamRejected, wantMessage: "(HTTP 418): teapot"},
		{name: "429", err: &idenfy.APIError{Status: 429}, wantCode: messages.CodeRateLimited, wantRetryable: true, retried: true},
		{name: "400 TOO_MANY_REQUESTS", err: &idenfy.APIError{Status: 400, Identifier: "TOO_MANY_REQUESTS"}, wantCode: messages.CodeRateLimited, wantRetryable: true, retried: true},
		{name: "500", err: &idenfy.APIError{Status: 500}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantMessage: "500"},
		{name: "502", err: &idenfy.APIError{Status: 502}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true},
		{name: "503", err: &idenfy.APIError{Status: 503}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true},
		{name: "504", err: &idenfy.APIError{Status: 504}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true},
		{name: "501 is not retried", err: &idenfy.APIError{Status: 501}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true},
		{name: "302", err: &idenfy.APIError{Status: 302}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, wantMessage: "unexpected HTTP 302"},
		{name: "unreadable 200", err: &idenfy.ResponseError{Status: 200, Reason: "body is not a JSON object"},
			wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantMessage: "could not be read"},
		{name: "timeout", err: timeout, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantMessage: "did not answer in time"},
		{name: "connection refused", err: refused, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true, retried: true, wantMessage: "could not reach iDenfy"},
		{name: "cancelled", err: &idenfy.TransportError{Op: "send-sms", Err: context.Canceled}, wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true},
		{name: "contract error", err: messages.NewError(messages.CodeTooManySends, "slow down"), wantCode: messages.CodeTooManySends, wantRetryable: true, wantMessage: "slow down"},
		{name: "other error", err: errors.New("boom"), wantCode: messages.CodeUpstreamUnavailable, wantRetryable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := contractError(tt.err, &attempts{count: 1})
			if got.Code != tt.wantCode || got.Retryable != tt.wantRetryable || !strings.Contains(got.Message, tt.wantMessage) {
				t.Errorf("contractError(%v) = %+v, want code %s, retryable %v, message containing %q",
					tt.err, got, tt.wantCode, tt.wantRetryable, tt.wantMessage)
			}
			if r := retryable(tt.err); r != tt.retried {
				t.Errorf("retryable(%v) = %v, want %v", tt.err, r, tt.retried)
			}
		})
	}
}

// TestRetryAfter: error.retry_after says, in whole seconds rounded up, when
// asking again makes sense, on the codes that have one.
func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code messages.Code
		want int
	}{
		{"429 with Retry-After", &idenfy.APIError{Status: 429, RetryAfter: 2500 * time.Millisecond}, messages.CodeRateLimited, 3},
		{"429 without", &idenfy.APIError{Status: 429}, messages.CodeRateLimited, 1},
		{"no turn of the rate limit", &fleetRefusal{Reason: refusedRateLimit, RetryAfter: 90 * time.Second}, messages.CodeRateLimited, 90},
		{"the fleet paused", &fleetRefusal{Reason: refusedPaused, RetryAfter: 100 * time.Millisecond}, messages.CodeRateLimited, 1},
		{"breaker open", &fleetRefusal{Reason: refusedBreakerOpen, RetryAfter: 4200 * time.Millisecond}, messages.CodeUpstreamUnavailable, 5},
		{"503 has none", &idenfy.APIError{Status: 503}, messages.CodeUpstreamUnavailable, 0},
	}
	for _, tt := range tests {
		got := contractError(tt.err, &attempts{count: 1})
		if got.Code != tt.code || got.RetryAfter != tt.want {
			t.Errorf("contractError(%s) = %s with retry_after %d, want %s with %d", tt.name, got.Code, got.RetryAfter, tt.code, tt.want)
		}
	}
}
