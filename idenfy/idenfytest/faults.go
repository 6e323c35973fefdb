package idenfytest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// A Fault changes how the simulator answers vendor calls (never the /_sim/
// control API). Its JSON form is the body of POST /_sim/faults.
//
// Status and Drop faults queue up in the order injected (within one Fault:
// the Status answers first, then the drops); each vendor call takes the next
// one. Latency replaces the latency in force.
type Fault struct {
	// Status is answered by the next Count vendor calls (400..599).
	Status int `json:"status,omitempty"`
	// Count defaults to 1 when Status is set.
	Count int `json:"count,omitempty"`
	// RetryAfter is sent verbatim as the Retry-After header of the Status answers.
	RetryAfter string `json:"retry_after,omitempty"`
	// Identifier is the vendor identifier in the Status answers' body. By
	// default: 400 BAD_VALUE, 429 TOO_MANY_REQUESTS, 5xx INTERNAL_ERROR, other
	// 4xx their status text in capitals (NOT_FOUND); 401, 402 and 403 have none,
	// like the vendor's auth errors, and answer {"detail": "..."}.
	Identifier string `json:"identifier,omitempty"`
	// Latency is a Go duration that every vendor call from now on waits
	// before it is handled; a call whose request context ends first gets no
	// answer. "0s" removes it.
	Latency string `json:"latency,omitempty"`
	// Drop is the number of next vendor calls whose connection is closed
	// without an answer, after their request was read.
	Drop int `json:"drop,omitempty"`
	// Processed makes this Fault's Status and Drop calls take effect first (the
	// SMS is sent, the code checked and consumed) and only then replaces their
	// answer: the request reached the vendor, the answer got lost. Without it
	// faulted calls have no effect.
	Processed bool `json:"processed,omitempty"`
}

// faultState is guarded by Simulator.mu.
type faultState struct {
	latency time.Duration
	queue   []Fault // Status faults with the Count left, or Drop faults with the Drop left
}

// InjectFault adds f to the current faults; the zero Fault clears them all,
// like ClearFaults. It returns an error, and changes nothing, if f is invalid.
func (s *Simulator) InjectFault(f Fault) error {
	if f == (Fault{}) {
		s.ClearFaults()
		return nil
	}
	latency, err := checkFault(f)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Latency != "" {
		s.faults.latency = latency
	}
	if f.Status != 0 {
		s.faults.queue = append(s.faults.queue, Fault{
			Status:     f.Status,
			Count:      max(f.Count, 1),
			RetryAfter: f.RetryAfter,
			Identifier: f.Identifier,
			Processed:  f.Processed,
		})
	}
	if f.Drop > 0 {
		s.faults.queue = append(s.faults.queue, Fault{Drop: f.Drop, Processed: f.Processed})
	}
	return nil
}

// ClearFaults removes all faults, latency included.
func (s *Simulator) ClearFaults() {
	s.mu.Lock()
	s.faults = faultState{}
	s.mu.Unlock()
}

func checkFault(f Fault) (latency time.Duration, err error) {
	switch {
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return 0, fmt.Errorf("idenfytest: fault status %d is outside 400..599", f.Status)
	case f.Count < 0 || f.Drop < 0:
		return 0, errors.New("idenfytest: fault count and drop must not be negative")
	case f.Status == 0 && (f.Count != 0 || f.RetryAfter != "" || f.Identifier != ""):
		return 0, errors.New("idenfytest: fault count, retry_after and identifier need a status")
	case f.Processed && f.Status == 0 && f.Drop == 0:
		return 0, errors.New("idenfytest: fault processed needs a status or drop")
	case f.Latency == "":
		return 0, nil
	}
	latency, err = time.ParseDuration(f.Latency)
	if err != nil {
		return 0, fmt.Errorf("idenfytest: fault latency: %w", err)
	}
	if latency < 0 {
		return 0, fmt.Errorf("idenfytest: fault latency %s is negative", f.Latency)
	}
	return latency, nil
}

// faultsView is the JSON answer of /_sim/faults.
type faultsView struct {
	Latency string  `json:"latency,omitempty"`
	Queued  []Fault `json:"queued"` // in the order vendor calls take them
}

func (s *Simulator) faultsView() faultsView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := faultsView{Queued: append([]Fault{}, s.faults.queue...)}
	if s.faults.latency > 0 {
		v.Latency = s.faults.latency.String()
	}
	return v
}

// takeFault returns the fault that the next vendor call gets, if any.
func (s *Simulator) takeFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults.queue) == 0 {
		return Fault{}, false
	}
	f := s.faults.queue[0]
	left := &s.faults.queue[0].Count
	if f.Drop > 0 {
		left = &s.faults.queue[0].Drop
	}
	if *left--; *left == 0 {
		s.faults.queue = s.faults.queue[1:]
	}
	return f, true
}

// delay waits out the latency in force, without holding the lock. It reports
// false if the request's context or the simulator ended first.
func (s *Simulator) delay(ctx context.Context) bool {
	s.mu.Lock()
	d := s.faults.latency
	s.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

// answerFault writes f's answer, or drops the connection for a Drop fault.
func answerFault(w http.ResponseWriter, f Fault) {
	if f.Drop > 0 {
		dropConnection(w)
		return
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	id := f.Identifier
	if id == "" {
		id = defaultIdentifier(f.Status)
	}
	msg := fmt.Sprintf("Simulated fault: HTTP %d.", f.Status)
	if id == "" {
		writeVendor(w, f.Status, detail{msg})
		return
	}
	writeVendor(w, f.Status, vendorError{Identifier: id, Message: msg})
}

func defaultIdentifier(status int) string {
	switch {
	case status == http.StatusBadRequest:
		return "BAD_VALUE"
	case status == http.StatusTooManyRequests:
		return "TOO_MANY_REQUESTS"
	case status >= 500:
		return "INTERNAL_ERROR"
	case status == http.StatusUnauthorized, status == http.StatusPaymentRequired, status == http.StatusForbidden:
		return ""
	}
	name := http.StatusText(status)
	if name == "" {
		return "VALIDATION_ERROR"
	}
	return strings.ToUpper(strings.NewReplacer(" ", "_", "-", "_", "'", "").Replace(name))
}

// dropConnection closes the connection without an answer. Without a
// connection to hijack (HTTP/2, httptest.ResponseRecorder) it aborts the
// handler, which net/http turns into a reset.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}
