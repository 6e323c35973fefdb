package worker

import (
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

func TestJobRetryDelay(t *testing.T) {
	tests := []struct {
		base      time.Duration
		delivered uint64
		want      time.Duration
	}{
		{5 * time.Second, 0, 5 * time.Second},
		{5 * time.Second, 1, 5 * time.Second},
		{5 * time.Second, 2, 10 * time.Second},
		{5 * time.Second, 3, 20 * time.Second},
		{5 * time.Second, 4, 40 * time.Second},
		{5 * time.Second, 5, time.Minute},
		{5 * time.Second, 20, time.Minute},
		{50 * time.Millisecond, 3, 200 * time.Millisecond},
		{2 * time.Minute, 1, time.Minute},
	}
	for _, tt := range tests {
		if got := jobRetryDelay(tt.base, tt.delivered); got != tt.want {
			t.Errorf("jobRetryDelay(%v, %d) = %v, want %v", tt.base, tt.delivered, got, tt.want)
		}
	}
}

func TestRetryLater(t *testing.T) {
	published := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	fail := func(code messages.Code, ambiguous bool) *outcome {
		return &outcome{op: opSend, a: attempts{ambiguous: ambiguous},
			send: messages.FailedSend("", 1, messages.NewError(code, "x"))}
	}
	tests := []struct {
		name      string
		o         *outcome
		last      bool
		age       time.Duration
		wantLater bool
		wantDelay time.Duration
	}{
		{name: "outage", o: fail(messages.CodeUpstreamUnavailable, false), wantLater: true, wantDelay: 10 * time.Second},
		{name: "rate limited", o: fail(messages.CodeRateLimited, false), wantLater: true, wantDelay: 10 * time.Second},
		{name: "ambiguous outage", o: fail(messages.CodeUpstreamUnavailable, true)},
		{name: "last delivery", o: fail(messages.CodeUpstreamUnavailable, false), last: true},
		{name: "too old by the next delivery", o: fail(messages.CodeUpstreamUnavailable, false), age: 4*time.Minute + 55*time.Second},
		{name: "permanent", o: fail(messages.CodeUnauthorized, false)},
		{name: "success", o: &outcome{op: opSend, send: messages.SendResult{Status: messages.StatusSent}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &jobDelivery{published: published, delivered: 2, last: tt.last, maxAge: 5 * time.Minute,
				retryBase: 5 * time.Second, now: func() time.Time { return published.Add(tt.age) }}
			delay, later := d.retryLater(tt.o)
			if later != tt.wantLater || delay != tt.wantDelay {
				t.Errorf("retryLater = %v, %v; want %v, %v", delay, later, tt.wantDelay, tt.wantLater)
			}
		})
	}
}
