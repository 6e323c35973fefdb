package idenfy

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{" 30 ", 30 * time.Second},
		{"3600", time.Hour},
		{"86400", 24 * time.Hour},
		{"86401", 24 * time.Hour},
		{"9223372036854775807", 24 * time.Hour},
		{"99999999999999999999", 0}, // overflows int64: not a number we can read
		{"-1", 0},
		{"1.5", 0},
		{"30s", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(2 * time.Hour).Format(time.RFC850), 2 * time.Hour},
		{now.Add(10 * time.Second).Format(time.ANSIC), 10 * time.Second},
		{now.Add(24*time.Hour + time.Second).Format(http.TimeFormat), 24 * time.Hour},
		{"Fri, 01 Jan 3000 00:00:00 GMT", 24 * time.Hour},
		{now.Format(http.TimeFormat), 0},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"Fri, 14 Mar 2025 25:00:00 GMT", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q, %v) = %v, want %v", tt.in, now, got, tt.want)
		}
	}
}
