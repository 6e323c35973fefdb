package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

func TestSendLogSince(t *testing.T) {
	base := time.UnixMilli(1_000_000)
	log := sendLog{1_000_000, 1_060_000, 1_120_000}
	tests := []struct {
		at   time.Time
		want int
	}{
		{base.Add(-time.Millisecond), 3},
		{base, 2}, // an entry exactly at the cut has left the window
		{base.Add(90 * time.Second), 1},
		{base.Add(3 * time.Minute), 0},
	}
	for _, tt := range tests {
		if got := len(log.since(tt.at)); got != tt.want {
			t.Errorf("since(%v) kept %d entries, want %d", tt.at.Sub(base), got, tt.want)
		}
	}
}

func TestOverLimit(t *testing.T) {
	limits := []SendLimit{{Count: 3, Window: 10 * time.Minute}, {Count: 10, Window: 24 * time.Hour}}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ago := func(ds ...time.Duration) sendLog {
		var l sendLog
		for _, d := range ds {
			l = append(l, now.Add(-d).UnixMilli())
		}
		return l
	}
	tests := []struct {
		name      string
		log       sendLog
		wantWait  string // "" when under every limit
		wantAfter int
	}{
		{name: "empty", log: nil},
		{name: "two in ten minutes", log: ago(5*time.Minute, time.Minute)},
		{name: "three in ten minutes", log: ago(9*time.Minute, 5*time.Minute, time.Minute),
			wantWait: "try again in 1m0s", wantAfter: 60},
		// Rounded up to the second: "try again" must never come early.
		{name: "frees in half a second", log: ago(10*time.Minute-500*time.Millisecond, 5*time.Minute, time.Minute),
			wantWait: "try again in 1s", wantAfter: 1},
		{name: "ten in a day", log: ago(23*time.Hour, 22*time.Hour, 21*time.Hour, 20*time.Hour, 19*time.Hour,
			18*time.Hour, 17*time.Hour, 16*time.Hour, 15*time.Hour, 14*time.Hour),
			wantWait: "try again in 1h0m0s", wantAfter: 3600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := overLimit(limits, tt.log, now)
			if tt.wantWait == "" {
				if e != nil {
					t.Fatalf("overLimit = %v, want nil", e)
				}
				return
			}
			if e == nil || e.Code != messages.CodeTooManySends || !strings.Contains(e.Message, tt.wantWait) {
				t.Fatalf("overLimit = %v, want too_many_sends saying %q", e, tt.wantWait)
			}
			if e.RetryAfter != tt.wantAfter {
				t.Errorf("overLimit retry_after = %d, want %d", e.RetryAfter, tt.wantAfter)
			}
		})
	}
}
