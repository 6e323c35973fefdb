package worker

import (
	"fmt"
	"strings"
	"time"
)

// Breaker opens the fleet's circuit after N unavailable answers from iDenfy
// in a row (5xx, timeouts, connection errors) within Window. The zero value
// means DefaultBreaker, as every zero setting of Config means its default;
// Off turns the breaker off.
type Breaker struct {
	N      int
	Window time.Duration
	Off    bool
}

// DefaultBreaker is WORKER_BREAKER's default, 5/10s.
var DefaultBreaker = Breaker{N: 5, Window: 10 * time.Second}

// DefaultBreakerProbe is WORKER_BREAKER_PROBE's default: while the breaker
// is open, one call of the whole fleet per this interval tries iDenfy.
const DefaultBreakerProbe = 5 * time.Second

func (b Breaker) String() string {
	switch {
	case b.Off:
		return "off"
	case b.N == 0:
		return DefaultBreaker.String()
	}
	return fmt.Sprintf("%d/%s", b.N, formatWindow(b.Window))
}

// ParseBreaker reads WORKER_BREAKER: "5/10s", "off"; "" means the default.
func ParseBreaker(s string) (Breaker, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return DefaultBreaker, nil
	case strings.EqualFold(s, "off"):
		return Breaker{Off: true}, nil
	}
	n, window, err := parseRate(s)
	if err != nil {
		return Breaker{}, err
	}
	return Breaker{N: n, Window: window}, nil
}

// ParseBreakerProbe reads WORKER_BREAKER_PROBE: a duration of at least 1s;
// "" means DefaultBreakerProbe.
func ParseBreakerProbe(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return DefaultBreakerProbe, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%q is not a duration of at least 1s such as 5s", s)
	}
	return d, nil
}

// States of the breaker as the fleet key stores them.
const (
	breakerClosed   = ""
	breakerOpen     = "open"
	breakerHalfOpen = "half_open" // open, with one probe call under way
)

// breakerState is the value of the fleet's breaker key. Times are Unix
// nanoseconds.
type breakerState struct {
	State string `json:"state,omitempty"`
	// Fails counts the unavailable answers in a row, the first at First.
	Fails int   `json:"fails,omitempty"`
	First int64 `json:"first,omitempty"`
	// Probe is when the next probe may start; Prober is the worker whose
	// probe is under way.
	Probe  int64  `json:"probe,omitempty"`
	Prober string `json:"prober,omitempty"`
}

// gauge is the breaker's state as idenfy_worker_breaker_state shows it.
func (s breakerState) gauge() float64 {
	switch s.State {
	case breakerOpen:
		return 1
	case breakerHalfOpen:
		return 2
	}
	return 0
}

// failed counts an unavailable answer at now; it reports whether the
// state changed (always, unless the breaker is already open).
func (s *breakerState) failed(now time.Time, br Breaker, probe time.Duration) bool {
	if s.State != breakerClosed {
		return false
	}
	at := now.UnixNano()
	if s.Fails == 0 || at-s.First > int64(br.Window) {
		s.Fails, s.First = 1, at
	} else {
		s.Fails++
	}
	if s.Fails >= br.N {
		s.State, s.Probe = breakerOpen, now.Add(probe).UnixNano()
	}
	return true
}

// answered ends a run of failures: iDenfy answered.
func (s *breakerState) answered() bool {
	if s.State != breakerClosed || s.Fails == 0 {
		return false
	}
	*s = breakerState{}
	return true
}

// takeProbe gives the probe turn to worker id if one is due.
func (s *breakerState) takeProbe(now time.Time, probe time.Duration, id string) bool {
	if s.State == breakerClosed || now.UnixNano() < s.Probe {
		return false
	}
	s.State, s.Probe, s.Prober = breakerHalfOpen, now.Add(probe).UnixNano(), id
	return true
}

// probed applies the outcome of the probe call of worker id. Any answer
// from iDenfy but an unavailable one, a 4xx or a 429 included, shows that it
// serves again and closes the breaker; an unavailable one keeps it open
// until the next probe time set when the probe was taken; an abandoned probe
// (never sent, or cut short by this side) lets the next caller probe at once.
func (s *breakerState) probed(now time.Time, o callOutcome, id string) bool {
	switch {
	case s.State == breakerClosed:
		return false
	case o == outcomeUnavailable:
		if s.State == breakerOpen {
			return false
		}
		s.State, s.Prober = breakerOpen, ""
	case o == outcomeAbandoned:
		if s.State != breakerHalfOpen || s.Prober != id {
			return false
		}
		s.State, s.Probe, s.Prober = breakerOpen, now.UnixNano(), ""
	default:
		*s = breakerState{}
	}
	return true
}
