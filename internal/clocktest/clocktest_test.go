package clocktest_test

import (
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/internal/clocktest"
)

func TestClock(t *testing.T) {
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	c := clocktest.New(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now() = %v, want %v", got, start)
	}
	if got := <-c.After(time.Minute); !got.Equal(start.Add(time.Minute)) {
		t.Errorf("<-After(1m) = %v, want %v", got, start.Add(time.Minute))
	}
	if got := c.Advance(time.Hour); !got.Equal(start.Add(61*time.Minute)) || !c.Now().Equal(got) {
		t.Errorf("Advance(1h) = %v, Now() = %v; want both %v", got, c.Now(), start.Add(61*time.Minute))
	}
}
