package idenfytest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

func injectFault(t *testing.T, s *idenfytest.Server, f idenfytest.Fault) {
	t.Helper()
	if err := s.InjectFault(f); err != nil {
		t.Fatalf("InjectFault(%+v) = %v, want nil", f, err)
	}
}

func TestFaultStatus(t *testing.T) {
	tests := []struct {
		name           string
		fault          idenfytest.Fault
		wantIdentifier string // "" for none: {"detail": ...}
	}{
		{"503", idenfytest.Fault{Status: 503}, "INTERNAL_ERROR"},
		{"500", idenfytest.Fault{Status: 500}, "INTERNAL_ERROR"},
		{"502", idenfytest.Fault{Status: 502}, "INTERNAL_ERROR"},
		{"429", idenfytest.Fault{Status: 429}, "TOO_MANY_REQUESTS"},
		{"429 with Retry-After", idenfytest.Fault{Status: 429, RetryAfter: "7"}, "TOO_MANY_REQUESTS"},
		{"503 with Retry-After date", idenfytest.Fault{Status: 503, RetryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"}, "INTERNAL_ERROR"},
		{"400", idenfytest.Fault{Status: 400}, "BAD_VALUE"},
		{"400 out of credits", idenfytest.Fault{Status: 400, Identifier: "PERMISSIONS_ERROR"}, "PERMISSIONS_ERROR"},
		{"401", idenfytest.Fault{Status: 401}, ""},
		{"402", idenfytest.Fault{Status: 402}, ""},
		{"403", idenfytest.Fault{Status: 403}, ""},
		{"404", idenfytest.Fault{Status: 404}, "NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			injectFault(t, s, tt.fault)
			r := vendorCall(t, s, sendPath, sendBody(t, phone))
			if r.status != tt.fault.Status {
				t.Fatalf("send-sms with fault %+v = %d, want %d", tt.fault, r.status, tt.fault.Status)
			}
			m := r.members(t)
			if tt.wantIdentifier == "" {
				if _, ok := m["identifier"]; ok || m["detail"] == nil {
					t.Errorf("send-sms with fault %+v = %s, want a detail and no identifier", tt.fault, r.body)
				}
			} else if m["identifier"] != tt.wantIdentifier || m["message"] == nil {
				t.Errorf("send-sms with fault %+v = %s, want identifier %s and a message", tt.fault, r.body, tt.wantIdentifier)
			}
			if got := r.header.Get("Retry-After"); got != tt.fault.RetryAfter {
				t.Errorf("send-sms with fault %+v: Retry-After = %q, want %q", tt.fault, got, tt.fault.RetryAfter)
			}
			if out := s.Outbox(phone); len(out) != 0 {
				t.Errorf("Outbox after a faulted send = %v, want nothing sent", out)
			}
			sendSMS(t, s, phone) // the fault was used up
		})
	}
}

func TestFaultQueue(t *testing.T) {
	tests := []struct {
		name   string
		faults []idenfytest.Fault
		want   []int // statuses of the next calls; 0 for a dropped connection
	}{
		{"count 1 by default", []idenfytest.Fault{{Status: 503}}, []int{503, 200}},
		{"count 3", []idenfytest.Fault{{Status: 503, Count: 3}}, []int{503, 503, 503, 200}},
		{"in the order injected", []idenfytest.Fault{{Status: 503, Count: 2}, {Status: 429}}, []int{503, 503, 429, 200}},
		{"status before drop", []idenfytest.Fault{{Status: 502, Drop: 2}}, []int{502, 0, 0, 200}},
		{"drop then status", []idenfytest.Fault{{Drop: 1}, {Status: 500}}, []int{0, 500, 200}},
		{"latency keeps the queue", []idenfytest.Fault{{Status: 500}, {Latency: "1ms"}}, []int{500, 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			for _, f := range tt.faults {
				injectFault(t, s, f)
			}
			var got []int
			for i := range tt.want {
				path, body := sendPath, sendBody(t, phone)
				if i%2 == 1 { // the queue serves both paths
					path, body = verifyPath, verifyBody(t, "0123456789abcdef0123456789abcdef", "1234")
				}
				req := newRequest(t, http.MethodPost, s.URL+path, body)
				req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
				r, err := try(t.Context(), req)
				if err != nil {
					r.status = 0
				} else if r.status == http.StatusBadRequest { // request_id not found: not faulted
					r.status = http.StatusOK
				}
				got = append(got, r.status)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("statuses with faults %+v = %v, want %v", tt.faults, got, tt.want)
			}
		})
	}
}

func TestFaultEffect(t *testing.T) {
	tests := []struct {
		name        string
		fault       idenfytest.Fault
		wantSent    bool // the faulted send-sms texted
		wantVerfied bool // the faulted verify-sms consumed the code
	}{
		{"status", idenfytest.Fault{Status: 500}, false, false},
		{"drop", idenfytest.Fault{Drop: 1}, false, false},
		{"processed status", idenfytest.Fault{Status: 500, Processed: true}, true, true},
		{"processed 504", idenfytest.Fault{Status: 504, Processed: true}, true, true},
		{"processed drop", idenfytest.Fault{Drop: 1, Processed: true}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))

			injectFault(t, s, tt.fault)
			req := newRequest(t, http.MethodPost, s.URL+sendPath, sendBody(t, phone))
			req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
			if r, err := try(t.Context(), req); err == nil && r.status == http.StatusOK {
				t.Fatalf("faulted send-sms = %d %s, want a fault", r.status, r.body)
			}
			if got := len(s.Outbox(phone)) == 1; got != tt.wantSent {
				t.Errorf("faulted send-sms texted = %v, want %v", got, tt.wantSent)
			}

			id := sendSMS(t, s, phone)
			code, _ := s.LastCode(phone)
			injectFault(t, s, tt.fault)
			req = newRequest(t, http.MethodPost, s.URL+verifyPath, verifyBody(t, id, code))
			req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
			if r, err := try(t.Context(), req); err == nil && r.status == http.StatusOK {
				t.Fatalf("faulted verify-sms = %d %s, want a fault", r.status, r.body)
			}
			// A consumed code answers false ("already validated").
			if got := !verifySMS(t, s, id, code); got != tt.wantVerfied {
				t.Errorf("faulted verify-sms consumed the code = %v, want %v", got, tt.wantVerfied)
			}
		})
	}
}

func TestFaultProcessedKeepsAuth(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	injectFault(t, s, idenfytest.Fault{Status: 502, Processed: true})
	req := newRequest(t, http.MethodPost, s.URL+sendPath, sendBody(t, phone))
	req.SetBasicAuth("intruder", "guess")
	if r := do(t, req); r.status != http.StatusBadGateway {
		t.Errorf("unauthorized send-sms with a processed fault = %d, want 502", r.status)
	}
	if out := s.Outbox(phone); len(out) != 0 {
		t.Errorf("Outbox after an unauthorized send = %v, want nothing sent", out)
	}
}

func TestDrop(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	injectFault(t, s, idenfytest.Fault{Drop: 2})
	for i := range 2 {
		req := newRequest(t, http.MethodPost, s.URL+sendPath, sendBody(t, phone))
		req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
		if r, err := try(t.Context(), req); err == nil {
			t.Errorf("send-sms #%d with a drop fault = %d %s, want no answer", i+1, r.status, r.body)
		}
	}
	if got, want := s.Stats(), (idenfytest.Stats{SendSMS: 2}); got != want {
		t.Errorf("Stats() after dropped calls = %+v, want %+v", got, want)
	}
	sendSMS(t, s, phone)
}

func TestLatency(t *testing.T) {
	const latency = 50 * time.Millisecond
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	injectFault(t, s, idenfytest.Fault{Latency: latency.String()})
	for _, path := range []string{sendPath, verifyPath} {
		start := time.Now()
		vendorCall(t, s, path, sendBody(t, phone))
		if took := time.Since(start); took < latency {
			t.Errorf("POST %s with latency %v took %v, want at least the latency", path, latency, took)
		}
	}
	if got := s.Now(); !got.Equal(t0) {
		t.Errorf("Now() after latency = %v, want the frozen clock %v", got, t0)
	}

	injectFault(t, s, idenfytest.Fault{Latency: "1h"})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a hang, not a measurement
	defer cancel()
	if _, err := try(ctx, newRequest(t, http.MethodGet, s.URL+"/_sim/stats", "")); err != nil {
		t.Errorf("control API with a latency fault: %v, want no latency", err)
	}
	injectFault(t, s, idenfytest.Fault{Latency: "0s"})
	req := newRequest(t, http.MethodPost, s.URL+sendPath, sendBody(t, phone))
	req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
	if _, err := try(ctx, req); err != nil {
		t.Errorf("send-sms after latency 0s: %v, want no latency", err)
	}
}

// TestLatencyEnds checks that a call waiting out a latency fault ends when its
// client gives up or the simulator closes, rather than holding its goroutine.
func TestLatencyEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(sim *idenfytest.Simulator, cancel context.CancelFunc)
	}{
		{"client gives up", func(_ *idenfytest.Simulator, cancel context.CancelFunc) { cancel() }},
		{"simulator closes", func(sim *idenfytest.Simulator, _ context.CancelFunc) { sim.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := idenfytest.NewSimulator(idenfytest.WithClock(t0))
			defer sim.Close()
			if err := sim.InjectFault(idenfytest.Fault{Latency: "1h"}); err != nil {
				t.Fatal(err)
			}
			received, handled := make(chan struct{}), make(chan struct{})
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(received)
				defer close(handled)
				sim.ServeHTTP(w, r)
			}))
			defer ts.Close()

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			failed := make(chan error)
			go func() {
				req, _ := http.NewRequest(http.MethodPost, ts.URL+sendPath, nil)
				_, err := try(ctx, req)
				failed <- err
			}()
			<-received
			tt.end(sim, cancel)
			select {
			case <-handled:
			case <-time.After(time.Minute): // a hang, not a measurement
				t.Fatal("the call still waits out its latency")
			}
			if err := <-failed; err == nil {
				t.Error("the client got an answer, want none")
			}
		})
	}
}

func TestInjectFaultInvalid(t *testing.T) {
	tests := []struct {
		name  string
		fault idenfytest.Fault
	}{
		{"status 200", idenfytest.Fault{Status: 200}},
		{"status 399", idenfytest.Fault{Status: 399}},
		{"status 600", idenfytest.Fault{Status: 600}},
		{"negative status", idenfytest.Fault{Status: -503}},
		{"negative count", idenfytest.Fault{Status: 503, Count: -1}},
		{"negative drop", idenfytest.Fault{Drop: -1}},
		{"count without status", idenfytest.Fault{Count: 2}},
		{"retry_after without status", idenfytest.Fault{RetryAfter: "5"}},
		{"identifier without status", idenfytest.Fault{Identifier: "BAD_VALUE"}},
		{"processed alone", idenfytest.Fault{Processed: true}},
		{"latency not a duration", idenfytest.Fault{Latency: "soon"}},
		{"latency without unit", idenfytest.Fault{Latency: "200"}},
		{"negative latency", idenfytest.Fault{Latency: "-1s"}},
		{"valid status with bad latency", idenfytest.Fault{Status: 503, Latency: "soon"}},
	}
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.InjectFault(tt.fault); err == nil {
				t.Errorf("InjectFault(%+v) = nil, want an error", tt.fault)
			}
		})
	}
	sendSMS(t, s, phone) // nothing was injected
}

func TestClearFaults(t *testing.T) {
	tests := []struct {
		name  string
		clear func(*idenfytest.Server)
	}{
		{"ClearFaults", func(s *idenfytest.Server) { s.ClearFaults() }},
		{"zero Fault", func(s *idenfytest.Server) { s.InjectFault(idenfytest.Fault{}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			injectFault(t, s, idenfytest.Fault{Status: 503, Count: 5})
			injectFault(t, s, idenfytest.Fault{Drop: 5, Latency: "1h"})
			tt.clear(s)
			sendSMS(t, s, phone) // no status, no drop, no latency (the test would hang)
		})
	}
}

func TestStats(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	id := sendSMS(t, s, phone)
	code, _ := s.LastCode(phone)

	unauthorized := newRequest(t, http.MethodPost, s.URL+sendPath, sendBody(t, phone))
	do(t, unauthorized)
	wrongMethod := newRequest(t, http.MethodGet, s.URL+verifyPath, "")
	do(t, wrongMethod)
	vendorCall(t, s, sendPath, `{}`)
	injectFault(t, s, idenfytest.Fault{Status: 503})
	vendorCall(t, s, sendPath, sendBody(t, phone))
	injectFault(t, s, idenfytest.Fault{Drop: 1})
	req := newRequest(t, http.MethodPost, s.URL+verifyPath, verifyBody(t, id, code))
	req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
	try(t.Context(), req)
	verifySMS(t, s, id, code)
	vendorCall(t, s, "/fraud/unknown", `{}`)
	control(t, s, "/_sim/stats", "")

	if got, want := s.Stats(), (idenfytest.Stats{SendSMS: 4, VerifySMS: 3}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}
