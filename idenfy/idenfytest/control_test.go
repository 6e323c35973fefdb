package idenfytest_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

func TestControlOutbox(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	id := sendSMS(t, s, phone)
	code, _ := s.LastCode(phone)
	tests := []struct {
		name  string
		query string
		want  int // deliveries
	}{
		{"escaped plus", "?phone_number=%2B12025550163", 1},
		{"literal plus, as curl sends it", "?phone_number=+12025550163", 1},
		{"other number", "?phone_number=%2B37060000001", 0},
		{"without the plus", "?phone_number=12025550163", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := control(t, s, "/_sim/outbox"+tt.query, "")
			if r.status != http.StatusOK {
				t.Fatalf("GET /_sim/outbox%s = %d %s, want 200", tt.query, r.status, r.body)
			}
			if tt.want == 0 {
				if got := string(r.body); got != "[]\n" {
					t.Errorf("GET /_sim/outbox%s = %q, want []", tt.query, got)
				}
				return
			}
			var got []map[string]any
			r.decode(t, &got)
			want := []map[string]any{{
				"phone_number": phone,
				"channel":      "sms",
				"code":         code,
				"request_id":   id,
				"sender_name":  "iDenfy",
				"text":         "iDenfy code: " + code + ". Valid for 5 minutes.",
				"at":           t0.Format(time.RFC3339),
			}}
			if len(got) != 1 || len(got[0]) != len(want[0]) {
				t.Fatalf("GET /_sim/outbox%s = %s, want %v", tt.query, r.body, want)
			}
			for k, v := range want[0] {
				if got[0][k] != v {
					t.Errorf("GET /_sim/outbox%s: %s = %v, want %v", tt.query, k, got[0][k], v)
				}
			}
		})
	}
}

func TestControlErrors(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		want   int
	}{
		{"outbox without phone_number", http.MethodGet, "/_sim/outbox", "", http.StatusBadRequest},
		{"outbox with empty phone_number", http.MethodGet, "/_sim/outbox?phone_number=", "", http.StatusBadRequest},
		{"outbox by POST", http.MethodPost, "/_sim/outbox?phone_number=%2B12025550163", "{}", http.StatusMethodNotAllowed},
		{"stats by POST", http.MethodPost, "/_sim/stats", "{}", http.StatusMethodNotAllowed},
		{"clock by DELETE", http.MethodDelete, "/_sim/clock", "", http.StatusMethodNotAllowed},
		{"unknown endpoint", http.MethodGet, "/_sim/reset", "", http.StatusNotFound},
		{"clock without advance", http.MethodPost, "/_sim/clock", `{}`, http.StatusBadRequest},
		{"clock backwards", http.MethodPost, "/_sim/clock", `{"advance": "-1m"}`, http.StatusBadRequest},
		{"clock not a duration", http.MethodPost, "/_sim/clock", `{"advance": "soon"}`, http.StatusBadRequest},
		{"clock seconds as a number", http.MethodPost, "/_sim/clock", `{"advance": 60}`, http.StatusBadRequest},
		{"clock not JSON", http.MethodPost, "/_sim/clock", `advance=1m`, http.StatusBadRequest},
		{"clock unknown member", http.MethodPost, "/_sim/clock", `{"advance": "1m", "to": "2030-01-01T00:00:00Z"}`, http.StatusBadRequest},
		{"clock two objects", http.MethodPost, "/_sim/clock", `{"advance": "1m"} {"advance": "1m"}`, http.StatusBadRequest},
		{"fault status 200", http.MethodPost, "/_sim/faults", `{"status": 200}`, http.StatusBadRequest},
		{"fault negative count", http.MethodPost, "/_sim/faults", `{"status": 503, "count": -1}`, http.StatusBadRequest},
		{"fault bad latency", http.MethodPost, "/_sim/faults", `{"latency": "fast"}`, http.StatusBadRequest},
		{"fault misspelt", http.MethodPost, "/_sim/faults", `{"stauts": 503}`, http.StatusBadRequest},
		{"fault empty body", http.MethodPost, "/_sim/faults", ``, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, newRequest(t, tt.method, s.URL+tt.path, tt.body))
			if r.status != tt.want {
				t.Fatalf("%s %s %s = %d %s, want %d", tt.method, tt.path, tt.body, r.status, r.body, tt.want)
			}
			if msg, _ := r.members(t)["error"].(string); msg == "" {
				t.Errorf("%s %s %s = %s, want an error message", tt.method, tt.path, tt.body, r.body)
			}
		})
	}
	if got := s.Now(); !got.Equal(t0) {
		t.Errorf("Now() after rejected control calls = %v, want %v", got, t0)
	}
	sendSMS(t, s, phone) // no fault was injected
}

func TestControlClock(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	sendSMS(t, s, phone)
	steps := []struct {
		name string
		body string // "" to read the clock
		want time.Duration
	}{
		{"read", "", 0},
		{"advance", `{"advance": "2m30s"}`, 2*time.Minute + 30*time.Second},
		{"read again", "", 2*time.Minute + 30*time.Second},
		{"advance zero", `{"advance": "0s"}`, 2*time.Minute + 30*time.Second},
		{"advance fractions", `{"advance": "1.5s"}`, 2*time.Minute + 31500*time.Millisecond},
	}
	for _, st := range steps {
		r := control(t, s, "/_sim/clock", st.body)
		var got struct {
			Now time.Time `json:"now"`
		}
		r.decode(t, &got)
		if r.status != http.StatusOK || !got.Now.Equal(t0.Add(st.want)) {
			t.Errorf("%s: /_sim/clock %s = %d %s, want now t0+%v", st.name, st.body, r.status, r.body, st.want)
		}
	}
	if got := channels(s.Outbox(phone)); !slices.Equal(got, []string{sms, call}) {
		t.Errorf("Outbox after advancing 2m30s = %v, want sms, call", got)
	}
}

func TestControlFaults(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	steps := []struct {
		name string
		body string // "" to read the faults
		want string
	}{
		{"none", "", `{"queued":[]}`},
		{"status", `{"status": 503, "count": 2}`, `{"queued":[{"status":503,"count":2}]}`},
		{"latency", `{"latency": "200ms"}`, `{"latency":"200ms","queued":[{"status":503,"count":2}]}`},
		{"drop", `{"drop": 1, "processed": true}`, `{"latency":"200ms","queued":[{"status":503,"count":2},{"drop":1,"processed":true}]}`},
		{"read", "", `{"latency":"200ms","queued":[{"status":503,"count":2},{"drop":1,"processed":true}]}`},
		{"clear", `{}`, `{"queued":[]}`},
		{"everything", `{"status": 429, "retry_after": "30", "identifier": "SLOW_DOWN", "latency": "1s"}`,
			`{"latency":"1s","queued":[{"status":429,"count":1,"retry_after":"30","identifier":"SLOW_DOWN"}]}`},
	}
	for _, st := range steps {
		r := control(t, s, "/_sim/faults", st.body)
		if got := string(r.body); r.status != http.StatusOK || got != st.want+"\n" {
			t.Errorf("%s: /_sim/faults %s = %d %s, want 200 %s", st.name, st.body, r.status, got, st.want)
		}
	}

	control(t, s, "/_sim/faults", `{}`)
	control(t, s, "/_sim/faults", `{"status": 503, "count": 2}`)
	for i, want := range []int{503, 503, 200} {
		if r := vendorCall(t, s, sendPath, sendBody(t, phone)); r.status != want {
			t.Errorf("send-sms #%d after injecting 503 twice = %d, want %d", i+1, r.status, want)
		}
	}
}

func TestControlStats(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	id := sendSMS(t, s, phone)
	sendSMS(t, s, phone)
	verifySMS(t, s, id, "0000")
	r := control(t, s, "/_sim/stats", "")
	if got, want := string(r.body), `{"send_sms":2,"verify_sms":1}`+"\n"; r.status != http.StatusOK || got != want {
		t.Errorf("GET /_sim/stats = %d %q, want 200 %q", r.status, got, want)
	}
}
