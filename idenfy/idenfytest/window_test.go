package idenfytest_test

import (
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

func TestMostInWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		out := make([]time.Time, len(ms))
		for i, m := range ms {
			out[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name  string
		times []time.Time
		want  int
	}{
		{name: "none", times: nil, want: 0},
		{name: "one", times: at(0), want: 1},
		{name: "all within", times: at(0, 100, 999), want: 3},
		{name: "a window is half open", times: at(0, 1000), want: 1},
		{name: "busiest later", times: at(0, 1500, 1600, 1700, 2600), want: 3},
		{name: "same instant", times: at(5, 5, 5), want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := idenfytest.MostInWindow(tt.times, time.Second); got != tt.want {
				t.Errorf("MostInWindow(%v, 1s) = %d, want %d", tt.times, got, tt.want)
			}
		})
	}
}
