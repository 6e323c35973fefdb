package idenfytest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

const (
	sendPath   = "/fraud/send-sms"
	verifyPath = "/fraud/verify-sms"
	phone      = "+12025550163"
)

// t0 is the frozen start of most tests' clocks.
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// response is a vendor or control API answer, read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// members decodes a JSON object answer.
func (r response) members(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer %d %q is not a JSON object: %v", r.status, r.body, err)
	}
	return m
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %q does not decode into %T: %v", r.status, r.body, v, err)
	}
}

func newRequest(t testing.TB, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// try sends req and reads the answer; err is the transport's error.
func try(ctx context.Context, req *http.Request) (response, error) {
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: body}, err
}

func do(t testing.TB, req *http.Request) response {
	t.Helper()
	r, err := try(context.Background(), req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return r
}

// vendorCall posts body to the vendor API path with the default credentials.
func vendorCall(t testing.TB, s *idenfytest.Server, path, body string) response {
	t.Helper()
	req := newRequest(t, http.MethodPost, s.URL+path, body)
	req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
	return do(t, req)
}

// control calls the control API; body "" means GET.
func control(t testing.TB, s *idenfytest.Server, pathAndQuery, body string) response {
	t.Helper()
	method := http.MethodGet
	if body != "" {
		method = http.MethodPost
	}
	return do(t, newRequest(t, method, s.URL+pathAndQuery, body))
}

func jsonText(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sendBody(t testing.TB, phone string) string {
	return jsonText(t, map[string]string{"phone_number": phone})
}

func verifyBody(t testing.TB, requestID, code string) string {
	return jsonText(t, map[string]string{"request_id": requestID, "received_code": code})
}

// sendSMS sends an SMS to phone and returns the request_id.
func sendSMS(t testing.TB, s *idenfytest.Server, phone string) string {
	t.Helper()
	r := vendorCall(t, s, sendPath, sendBody(t, phone))
	if r.status != http.StatusOK {
		t.Fatalf("send-sms(%q) = %d %s, want 200", phone, r.status, r.body)
	}
	var a struct {
		RequestID string `json:"request_id"`
	}
	r.decode(t, &a)
	return a.RequestID
}

// verifySMS returns the vendor's is_verified for code.
func verifySMS(t testing.TB, s *idenfytest.Server, requestID, code string) bool {
	t.Helper()
	r := vendorCall(t, s, verifyPath, verifyBody(t, requestID, code))
	if r.status != http.StatusOK {
		t.Fatalf("verify-sms(%q) = %d %s, want 200", code, r.status, r.body)
	}
	var a struct {
		IsVerified *bool `json:"is_verified"`
	}
	r.decode(t, &a)
	if a.IsVerified == nil {
		t.Fatalf("verify-sms(%q) = %s, want is_verified", code, r.body)
	}
	return *a.IsVerified
}

// otherCode returns a valid-looking code that is not code.
func otherCode(code string) string {
	n, _ := strconv.Atoi(code)
	return fmt.Sprintf("%04d", (n+1)%10000)
}

func channels(out []idenfytest.Delivery) []string {
	cs := []string{}
	for _, d := range out {
		cs = append(cs, d.Channel)
	}
	return cs
}
