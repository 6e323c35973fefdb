package idenfy_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
)

const (
	testKey       = "test-key-7f3a"
	testSecret    = "test-secret-Q9vXw2"
	testPhone     = "+37060012345"
	testCode      = "4821"
	testRequestID = "3d50e1584e0946e789e0185c009aaadf"
)

// testAuth is the Authorization header value the client must send, and must
// never let into an error.
var testAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(testKey+":"+testSecret))

// newClient returns a Client of the test credentials for baseURL.
func newClient(t *testing.T, baseURL string, opts ...idenfy.Option) *idenfy.Client {
	t.Helper()
	c, err := idenfy.NewClient(idenfy.Config{BaseURL: baseURL, APIKey: testKey, APISecret: testSecret}, opts...)
	if err != nil {
		t.Fatalf("NewClient(%q) = %v", baseURL, err)
	}
	return c
}

// serve starts h on a loopback port for the test's lifetime.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// answer reads the whole request, like the vendor, then answers status with
// header and body.
func answer(status int, header http.Header, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		for k, vs := range header {
			w.Header()[k] = vs
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// checkNoSecrets fails if err, however printed, carries the API secret, the
// Authorization header, the full phone number or the code.
func checkNoSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err)} {
		for _, secret := range []string{testSecret, testAuth, strings.TrimPrefix(testAuth, "Basic "), testPhone, testCode} {
			if strings.Contains(text, secret) {
				t.Errorf("error %q contains secret %q", text, secret)
			}
		}
	}
}

// call is one client method with the test's inputs.
type call struct {
	name string
	do   func(context.Context, *idenfy.Client) error
}

var (
	sendCall = call{"SendSMS", func(ctx context.Context, c *idenfy.Client) error {
		_, err := c.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: testPhone})
		return err
	}}
	verifyCall = call{"VerifySMS", func(ctx context.Context, c *idenfy.Client) error {
		_, err := c.VerifySMS(ctx, idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: testCode})
		return err
	}}
	bothCalls = []call{sendCall, verifyCall}
)

func TestRequestShape(t *testing.T) {
	tests := []struct {
		name     string
		prefix   string // path the base URL carries
		base     func(srvURL string) string
		do       func(*idenfy.Client) error
		wantPath string
		wantBody string
	}{
		{
			name: "send without sender",
			base: func(u string) string { return u },
			do: func(c *idenfy.Client) error {
				_, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone})
				return err
			},
			wantPath: "/fraud/send-sms",
			wantBody: `{"phone_number":"+37060012345"}`,
		},
		{
			name: "send with sender",
			base: func(u string) string { return u },
			do: func(c *idenfy.Client) error {
				_, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone, SenderName: "The Sender"})
				return err
			},
			wantPath: "/fraud/send-sms",
			wantBody: `{"phone_number":"+37060012345","sender_name":"The Sender"}`,
		},
		{
			name: "verify",
			base: func(u string) string { return u },
			do: func(c *idenfy.Client) error {
				_, err := c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: testCode})
				return err
			},
			wantPath: "/fraud/verify-sms",
			wantBody: `{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"4821"}`,
		},
		{
			name: "trailing slashes on the base URL",
			base: func(u string) string { return u + "//" },
			do: func(c *idenfy.Client) error {
				_, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone})
				return err
			},
			wantPath: "/fraud/send-sms",
			wantBody: `{"phone_number":"+37060012345"}`,
		},
		{
			name: "path prefix kept",
			base: func(u string) string { return u + "/proxy/idenfy/" },
			do: func(c *idenfy.Client) error {
				_, err := c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: testCode})
				return err
			},
			wantPath: "/proxy/idenfy/fraud/verify-sms",
			wantBody: `{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"4821"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *http.Request
			var gotBody []byte
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				gotBody, _ = io.ReadAll(r.Body)
				got = r
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"request_id":"`+testRequestID+`","is_verified":true}`)
			})
			c := newClient(t, tt.base(srv.URL), idenfy.WithUserAgent("shape-test/1"))
			if err := tt.do(c); err != nil {
				t.Fatalf("call = %v, want nil", err)
			}
			if got.Method != http.MethodPost {
				t.Errorf("method = %s, want POST", got.Method)
			}
			if got.URL.Path != tt.wantPath {
				t.Errorf("path = %q, want %q", got.URL.Path, tt.wantPath)
			}
			if got.URL.RawQuery != "" {
				t.Errorf("query = %q, want none", got.URL.RawQuery)
			}
			if ct := got.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if a := got.Header.Get("Accept"); a != "application/json" {
				t.Errorf("Accept = %q, want application/json", a)
			}
			if ua := got.Header.Get("User-Agent"); ua != "shape-test/1" {
				t.Errorf("User-Agent = %q, want %q", ua, "shape-test/1")
			}
			user, pass, ok := got.BasicAuth()
			if !ok || user != testKey || pass != testSecret {
				t.Errorf("BasicAuth() = %q, %q, %v, want %q, %q, true", user, pass, ok, testKey, testSecret)
			}
			if string(gotBody) != tt.wantBody {
				t.Errorf("body = %s, want %s", gotBody, tt.wantBody)
			}
		})
	}
}

func TestSuccess(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		do     func(*idenfy.Client) (any, error)
		want   any
	}{
		{name: "send", status: 200, body: `{"request_id": "3d50e1584e0946e789e0185c009aaadf"}`,
			do: func(c *idenfy.Client) (any, error) {
				return c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone})
			},
			want: idenfy.SendSMSResponse{RequestID: testRequestID}},
		{name: "send 201 with unknown fields", status: 201, body: ` {"request_id": "3d50e1584e0946e789e0185c009aaadf", "status": "SENT", "cost": 0.05} ` + "\n",
			do: func(c *idenfy.Client) (any, error) {
				return c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: testPhone})
			},
			want: idenfy.SendSMSResponse{RequestID: testRequestID}},
		{name: "verify true", status: 200, body: `{"is_verified": true}`,
			do: func(c *idenfy.Client) (any, error) {
				return c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: testCode})
			},
			want: idenfy.VerifySMSResponse{IsVerified: true}},
		{name: "verify false", status: 200, body: `{"is_verified": false}`,
			do: func(c *idenfy.Client) (any, error) {
				return c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: testCode})
			},
			want: idenfy.VerifySMSResponse{IsVerified: false}},
		{name: "body of exactly MaxResponseSize", status: 200, body: paddedBody(`{"is_verified":true,"pad":"`, idenfy.MaxResponseSize),
			do: func(c *idenfy.Client) (any, error) {
				return c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: testCode})
			},
			want: idenfy.VerifySMSResponse{IsVerified: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, answer(tt.status, nil, tt.body))
			got, err := tt.do(newClient(t, srv.URL))
			if err != nil {
				t.Fatalf("%s: err = %v, want nil", tt.name, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s: answer mismatch (-want +got):\n%s", tt.name, diff)
			}
		})
	}
}

// paddedBody closes the JSON string opened at the end of head after padding
// the whole body to n bytes.
func paddedBody(head string, n int) string {
	return head + strings.Repeat("x", n-len(head)-2) + `"}`
}

// sentinels are the classifying errors of the package, for checking that an
// error matches exactly the ones it should.
var sentinels = []error{
	idenfy.ErrUnauthorized, idenfy.ErrQuotaExhausted, idenfy.ErrRateLimited,
	idenfy.ErrServerError, idenfy.ErrInvalidResponse, idenfy.ErrInvalidConfig, idenfy.ErrInsecureBaseURL,
}

func checkSentinels(t *testing.T, name string, err error, want ...error) {
	t.Helper()
	for _, s := range sentinels {
		wantIs := false
		for _, w := range want {
			wantIs = wantIs || w == s
		}
		if got := errors.Is(err, s); got != wantIs {
			t.Errorf("%s: errors.Is(%v, %v) = %v, want %v", name, err, s, got, wantIs)
		}
	}
}

func TestAPIErrors(t *testing.T) {
	longMessage := strings.Repeat("very long vendor message ", 1000)
	tests := []struct {
		name      string
		status    int
		header    http.Header
		body      string
		want      idenfy.APIError
		wantIs    []error
		ambiguous bool
	}{
		{name: "400 validation", status: 400,
			body: `{"identifier": "BAD_VALUE", "message": "phone_number is not valid"}`,
			want: idenfy.APIError{Status: 400, Identifier: "BAD_VALUE", Message: "phone_number is not valid"}},
		{name: "400 missing value with a field map", status: 400,
			body: `{"identifier": "MISSING_VALUE", "message": {"phone_number": ["This field is required."]}}`,
			want: idenfy.APIError{Status: 400, Identifier: "MISSING_VALUE", Message: `{"phone_number":["This field is required."]}`}},
		{name: "400 permissions is quota", status: 400,
			body:   `{"identifier": "PERMISSIONS_ERROR", "message": "Credits used up"}`,
			want:   idenfy.APIError{Status: 400, Identifier: "PERMISSIONS_ERROR", Message: "Credits used up"},
			wantIs: []error{idenfy.ErrQuotaExhausted}},
		{name: "400 identifier that is not one", status: 400,
			body: `{"identifier": "bad value <script>", "message": "m"}`,
			want: idenfy.APIError{Status: 400, Message: "m"}},
		{name: "400 identifier not a string", status: 400,
			body: `{"identifier": 7, "message": "m"}`,
			want: idenfy.APIError{Status: 400, Message: "m"}},
		{name: "400 message not JSON", status: 400, header: http.Header{"Content-Type": {"text/plain"}},
			body: `oops, plain text`,
			want: idenfy.APIError{Status: 400, Message: "Bad Request"}},
		{name: "401 detail without identifier", status: 401,
			body:   `{"detail": "Invalid username/password."}`,
			want:   idenfy.APIError{Status: 401, Message: "Invalid username/password."},
			wantIs: []error{idenfy.ErrUnauthorized}},
		{name: "401 empty body", status: 401, body: ``,
			want:   idenfy.APIError{Status: 401, Message: "Unauthorized"},
			wantIs: []error{idenfy.ErrUnauthorized}},
		{name: "402 lack of funds", status: 402,
			body:   `{"detail": "Lack of funds."}`,
			want:   idenfy.APIError{Status: 402, Message: "Lack of funds."},
			wantIs: []error{idenfy.ErrQuotaExhausted}},
		{name: "403 partner inactive", status: 403,
			body:   `{"detail": "Partner is not active."}`,
			want:   idenfy.APIError{Status: 403, Message: "Partner is not active."},
			wantIs: []error{idenfy.ErrUnauthorized}},
		{name: "403 with PERMISSIONS_ERROR stays unauthorized", status: 403,
			body:   `{"identifier": "PERMISSIONS_ERROR", "message": "no"}`,
			want:   idenfy.APIError{Status: 403, Identifier: "PERMISSIONS_ERROR", Message: "no"},
			wantIs: []error{idenfy.ErrUnauthorized}},
		{name: "404 HTML page", status: 404, header: http.Header{"Content-Type": {"text/html"}},
			body: `<html><body><h1>Not Found</h1></body></html>`,
			want: idenfy.APIError{Status: 404, Message: "Not Found"}},
		{name: "429 Retry-After seconds", status: 429, header: http.Header{"Retry-After": {"30"}},
			body:   `{"identifier": "TOO_MANY_REQUESTS", "message": "Request limit reached"}`,
			want:   idenfy.APIError{Status: 429, Identifier: "TOO_MANY_REQUESTS", Message: "Request limit reached", RetryAfter: 30 * time.Second},
			wantIs: []error{idenfy.ErrRateLimited}},
		{name: "429 Retry-After garbage", status: 429, header: http.Header{"Retry-After": {"soon"}},
			body:   `{"identifier": "TOO_MANY_REQUESTS", "message": "m"}`,
			want:   idenfy.APIError{Status: 429, Identifier: "TOO_MANY_REQUESTS", Message: "m"},
			wantIs: []error{idenfy.ErrRateLimited}},
		{name: "429 Retry-After negative", status: 429, header: http.Header{"Retry-After": {"-5"}},
			want:   idenfy.APIError{Status: 429, Message: "Too Many Requests"},
			wantIs: []error{idenfy.ErrRateLimited}},
		{name: "429 Retry-After absurd is capped at a day", status: 429, header: http.Header{"Retry-After": {"99999999999"}},
			want:   idenfy.APIError{Status: 429, Message: "Too Many Requests", RetryAfter: 24 * time.Hour},
			wantIs: []error{idenfy.ErrRateLimited}},
		{name: "429 Retry-After date in the past", status: 429, header: http.Header{"Retry-After": {"Wed, 21 Oct 2015 07:28:00 GMT"}},
			want:   idenfy.APIError{Status: 429, Message: "Too Many Requests"},
			wantIs: []error{idenfy.ErrRateLimited}},
		{name: "500", status: 500,
			body:   `{"identifier": "INTERNAL_ERROR", "message": "Internal error"}`,
			want:   idenfy.APIError{Status: 500, Identifier: "INTERNAL_ERROR", Message: "Internal error"},
			wantIs: []error{idenfy.ErrServerError}, ambiguous: true},
		{name: "500 HTML page", status: 500, header: http.Header{"Content-Type": {"text/html"}},
			body:   `<!DOCTYPE html><html><title>Server Error (500)</title></html>`,
			want:   idenfy.APIError{Status: 500, Message: "Internal Server Error"},
			wantIs: []error{idenfy.ErrServerError}, ambiguous: true},
		{name: "501", status: 501,
			want:   idenfy.APIError{Status: 501, Message: "Not Implemented"},
			wantIs: []error{idenfy.ErrServerError}},
		{name: "502", status: 502, header: http.Header{"Content-Type": {"text/html"}},
			body:   `<html><body>502 Bad Gateway</body></html>`,
			want:   idenfy.APIError{Status: 502, Message: "Bad Gateway"},
			wantIs: []error{idenfy.ErrServerError}, ambiguous: true},
		{name: "503 with Retry-After", status: 503, header: http.Header{"Retry-After": {"120"}},
			body:   `{"detail": "Service unavailable"}`,
			want:   idenfy.APIError{Status: 503, Message: "Service unavailable", RetryAfter: 2 * time.Minute},
			wantIs: []error{idenfy.ErrServerError}},
		{name: "503 body over the limit", status: 503,
			body:   paddedBody(`{"detail":"`, idenfy.MaxResponseSize+1),
			want:   idenfy.APIError{Status: 503, Message: "Service Unavailable"},
			wantIs: []error{idenfy.ErrServerError}},
		{name: "504", status: 504, body: ``,
			want:   idenfy.APIError{Status: 504, Message: "Gateway Timeout"},
			wantIs: []error{idenfy.ErrServerError}, ambiguous: true},
		{name: "redirect is not followed", status: 302, header: http.Header{"Location": {"/elsewhere"}},
			want: idenfy.APIError{Status: 302, Message: "Found"}},
		{name: "message quoting a phone number and a code is masked", status: 400,
			body: `{"identifier": "BAD_VALUE", "message": "Code 4821 for +37060012345 is not valid"}`,
			want: idenfy.APIError{Status: 400, Identifier: "BAD_VALUE", Message: "Code **** for +*********** is not valid"}},
		{name: "detail quoting a phone number is masked", status: 403,
			body:   `{"detail": "Number 37060012345 is blocked"}`,
			want:   idenfy.APIError{Status: 403, Message: "Number *********** is blocked"},
			wantIs: []error{idenfy.ErrUnauthorized}},
		{name: "multi-line message becomes one line", status: 400,
			body: `{"identifier": "BAD_VALUE", "message": "first line\r\nsecond\tline\n\n  third\u0000line\u0085end"}`,
			want: idenfy.APIError{Status: 400, Identifier: "BAD_VALUE", Message: "first line second line third line end"}},
		{name: "very long message is bounded", status: 400,
			body: `{"identifier": "BAD_VALUE", "message": "` + longMessage + `"}`,
			want: idenfy.APIError{Status: 400, Identifier: "BAD_VALUE", Message: longMessage[:256] + "..."}},
	}
	for _, tt := range tests {
		for _, c := range bothCalls {
			t.Run(tt.name+"/"+c.name, func(t *testing.T) {
				srv := serve(t, answer(tt.status, tt.header, tt.body))
				err := c.do(context.Background(), newClient(t, srv.URL))
				name := fmt.Sprintf("%s against %d %.40q", c.name, tt.status, tt.body)
				var ae *idenfy.APIError
				if !errors.As(err, &ae) {
					t.Fatalf("%s = %v (%T), want *idenfy.APIError", name, err, err)
				}
				if diff := cmp.Diff(tt.want, *ae); diff != "" {
					t.Errorf("%s APIError mismatch (-want +got):\n%s", name, diff)
				}
				checkSentinels(t, name, err, tt.wantIs...)
				if got := idenfy.Ambiguous(err); got != tt.ambiguous {
					t.Errorf("Ambiguous(%v) = %v, want %v", err, got, tt.ambiguous)
				}
				if !strings.Contains(err.Error(), ae.Message) || !strings.Contains(err.Error(), fmt.Sprint(tt.status)) {
					t.Errorf("%s Error() = %q, want it to carry the status and message %q", name, err, ae.Message)
				}
				if !utf8.ValidString(err.Error()) || strings.ContainsAny(err.Error(), "\r\n\t\x00") {
					t.Errorf("%s Error() = %q, want one printable line", name, err)
				}
				if len(ae.Message) > 300 {
					t.Errorf("%s Message is %d bytes, want it bounded", name, len(ae.Message))
				}
				checkNoSecrets(t, err)
			})
		}
	}
}

func TestAPIErrorString(t *testing.T) {
	tests := []struct {
		err  idenfy.APIError
		want string
	}{
		{idenfy.APIError{Status: 400, Identifier: "BAD_VALUE", Message: "m"}, "idenfy: HTTP 400 BAD_VALUE: m"},
		{idenfy.APIError{Status: 401, Message: "Invalid token."}, "idenfy: HTTP 401: Invalid token."},
		{idenfy.APIError{Status: 500}, "idenfy: HTTP 500"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	at := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	srv := serve(t, answer(429, http.Header{"Retry-After": {at}}, `{"identifier": "TOO_MANY_REQUESTS"}`))
	err := sendCall.do(context.Background(), newClient(t, srv.URL))
	var ae *idenfy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("SendSMS against 429 = %v (%T), want *idenfy.APIError", err, err)
	}
	// The date has a resolution of a second and the clock moved on since.
	if ae.RetryAfter <= 30*time.Minute || ae.RetryAfter > time.Hour {
		t.Errorf("Retry-After %q parsed as %v, want about an hour", at, ae.RetryAfter)
	}
	checkSentinels(t, "SendSMS against 429", err, idenfy.ErrRateLimited)
	checkNoSecrets(t, err)
}

func TestInvalidResponses(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		call   call
	}{
		{name: "HTML page with 200", status: 200, header: http.Header{"Content-Type": {"text/html"}},
			body: "<html><body>Welcome to nginx!</body></html>", call: sendCall},
		{name: "HTML page with 200 on verify", status: 200, header: http.Header{"Content-Type": {"text/html"}},
			body: "<html><body>Welcome to nginx!</body></html>", call: verifyCall},
		{name: "empty body", status: 200, body: "", call: sendCall},
		{name: "whitespace body", status: 200, body: " \n", call: verifyCall},
		{name: "204 no content", status: 204, body: "", call: sendCall},
		{name: "truncated JSON", status: 200, body: `{"request_id": "3d50e1584e09`, call: sendCall},
		{name: "truncated JSON on verify", status: 200, body: `{"is_verified": tr`, call: verifyCall},
		{name: "trailing garbage", status: 200, body: `{"is_verified": true} {"is_verified": false}`, call: verifyCall},
		{name: "array", status: 200, body: `[{"request_id": "3d50e1584e0946e789e0185c009aaadf"}]`, call: sendCall},
		{name: "JSON string", status: 200, body: `"3d50e1584e0946e789e0185c009aaadf"`, call: sendCall},
		{name: "null", status: 200, body: `null`, call: verifyCall},
		{name: "request_id a number", status: 200, body: `{"request_id": 5}`, call: sendCall},
		{name: "request_id an object", status: 200, body: `{"request_id": {"id": "x"}}`, call: sendCall},
		{name: "request_id missing", status: 200, body: `{"id": "3d50e1584e0946e789e0185c009aaadf"}`, call: sendCall},
		{name: "request_id empty", status: 200, body: `{"request_id": ""}`, call: sendCall},
		{name: "request_id null", status: 200, body: `{"request_id": null}`, call: sendCall},
		{name: "is_verified a string", status: 200, body: `{"is_verified": "true"}`, call: verifyCall},
		{name: "is_verified a number", status: 200, body: `{"is_verified": 1}`, call: verifyCall},
		{name: "is_verified missing", status: 200, body: `{"verified": true}`, call: verifyCall},
		{name: "is_verified null", status: 200, body: `{"is_verified": null}`, call: verifyCall},
		{name: "body over MaxResponseSize", status: 200,
			body: paddedBody(`{"request_id":"3d50e1584e0946e789e0185c009aaadf","pad":"`, idenfy.MaxResponseSize+1), call: sendCall},
		{name: "huge body", status: 200,
			body: paddedBody(`{"is_verified":true,"pad":"`, 10*idenfy.MaxResponseSize), call: verifyCall},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, answer(tt.status, tt.header, tt.body))
			err := tt.call.do(context.Background(), newClient(t, srv.URL))
			name := fmt.Sprintf("%s against %d %.40q", tt.call.name, tt.status, tt.body)
			var re *idenfy.ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("%s = %v (%T), want *idenfy.ResponseError", name, err, err)
			}
			if re.Status != tt.status && !(tt.status/100 == 2 && re.Status == 200) {
				t.Errorf("%s ResponseError.Status = %d, want %d", name, re.Status, tt.status)
			}
			checkSentinels(t, name, err, idenfy.ErrInvalidResponse)
			// A 2xx means iDenfy took the call: whatever it did is unknown.
			if !idenfy.Ambiguous(err) {
				t.Errorf("Ambiguous(%v) = false, want true", err)
			}
			if strings.Contains(err.Error(), "<html") || strings.Contains(err.Error(), "xxxxxxxx") {
				t.Errorf("%s Error() = %q quotes the body", name, err)
			}
			checkNoSecrets(t, err)
		})
	}
}

func TestNewClientConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     idenfy.Config
		opts    []idenfy.Option
		wantErr error // nil: accepted
	}{
		{name: "default base URL", cfg: idenfy.Config{APIKey: "k", APISecret: "s"}},
		{name: "https", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com", APIKey: "k", APISecret: "s"}},
		{name: "https with trailing slash", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com/", APIKey: "k", APISecret: "s"}},
		{name: "https with path and port", cfg: idenfy.Config{BaseURL: "https://gw.example.com:8443/idenfy", APIKey: "k", APISecret: "s"}},
		{name: "upper-case scheme", cfg: idenfy.Config{BaseURL: "HTTPS://ivs.idenfy.com", APIKey: "k", APISecret: "s"}},
		{name: "http loopback IPv4", cfg: idenfy.Config{BaseURL: "http://127.0.0.1:8089", APIKey: "k", APISecret: "s"}},
		{name: "http loopback IPv4 other address", cfg: idenfy.Config{BaseURL: "http://127.0.0.2", APIKey: "k", APISecret: "s"}},
		{name: "http loopback IPv6", cfg: idenfy.Config{BaseURL: "http://[::1]:8089", APIKey: "k", APISecret: "s"}},
		{name: "http localhost", cfg: idenfy.Config{BaseURL: "http://localhost:8089/", APIKey: "k", APISecret: "s"}},
		{name: "all options", cfg: idenfy.Config{APIKey: "k", APISecret: "s"},
			opts: []idenfy.Option{idenfy.WithTimeout(time.Second), idenfy.WithMaxConnections(8), idenfy.WithUserAgent("ua"), idenfy.WithHTTPClient(&http.Client{})}},

		{name: "http remote host", cfg: idenfy.Config{BaseURL: "http://example.com", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInsecureBaseURL},
		{name: "http private address", cfg: idenfy.Config{BaseURL: "http://10.0.0.1:8089", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInsecureBaseURL},
		{name: "http unspecified address", cfg: idenfy.Config{BaseURL: "http://0.0.0.0:8089", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInsecureBaseURL},
		{name: "http host named like localhost", cfg: idenfy.Config{BaseURL: "http://localhost.example.com", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInsecureBaseURL},
		{name: "http host named like loopback", cfg: idenfy.Config{BaseURL: "http://127.0.0.1.nip.io", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInsecureBaseURL},
		{name: "ftp", cfg: idenfy.Config{BaseURL: "ftp://ivs.idenfy.com", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "garbage", cfg: idenfy.Config{BaseURL: "garbage", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "no scheme", cfg: idenfy.Config{BaseURL: "ivs.idenfy.com", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "host:port without scheme", cfg: idenfy.Config{BaseURL: "localhost:8089", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "no host", cfg: idenfy.Config{BaseURL: "https://", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "unparsable", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com:port", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "control character", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com\n", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "credentials in URL", cfg: idenfy.Config{BaseURL: "https://" + testKey + ":" + testSecret + "@ivs.idenfy.com", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "credentials in loopback http URL", cfg: idenfy.Config{BaseURL: "http://" + testKey + ":" + testSecret + "@127.0.0.1", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "query", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com?env=test", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "empty query", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com?", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "fragment", cfg: idenfy.Config{BaseURL: "https://ivs.idenfy.com#x", APIKey: "k", APISecret: "s"}, wantErr: idenfy.ErrInvalidConfig},
		{name: "missing key", cfg: idenfy.Config{APISecret: testSecret}, wantErr: idenfy.ErrInvalidConfig},
		{name: "missing secret", cfg: idenfy.Config{APIKey: testKey}, wantErr: idenfy.ErrInvalidConfig},
		{name: "nothing", cfg: idenfy.Config{}, wantErr: idenfy.ErrInvalidConfig},
		{name: "zero timeout", cfg: idenfy.Config{APIKey: "k", APISecret: "s"}, opts: []idenfy.Option{idenfy.WithTimeout(0)}, wantErr: idenfy.ErrInvalidConfig},
		{name: "negative timeout", cfg: idenfy.Config{APIKey: "k", APISecret: "s"}, opts: []idenfy.Option{idenfy.WithTimeout(-time.Second)}, wantErr: idenfy.ErrInvalidConfig},
		{name: "zero max connections", cfg: idenfy.Config{APIKey: "k", APISecret: "s"}, opts: []idenfy.Option{idenfy.WithMaxConnections(0)}, wantErr: idenfy.ErrInvalidConfig},
		{name: "nil HTTP client", cfg: idenfy.Config{APIKey: "k", APISecret: "s"}, opts: []idenfy.Option{idenfy.WithHTTPClient(nil)}, wantErr: idenfy.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := idenfy.NewClient(tt.cfg, tt.opts...)
			call := fmt.Sprintf("NewClient(BaseURL %q)", tt.cfg.BaseURL)
			if tt.wantErr == nil {
				if err != nil || c == nil {
					t.Fatalf("%s = %v, %v, want a client", call, c, err)
				}
				return
			}
			if c != nil {
				t.Errorf("%s returned a client with error %v", call, err)
			}
			checkSentinels(t, call, err, tt.wantErr)
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("%s = %q, which carries the secret", call, err)
			}
		})
	}
}

func TestWithHTTPClient(t *testing.T) {
	srv := serve(t, answer(200, nil, `{"is_verified": true}`))
	var trips atomic.Int32
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		trips.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	if err := verifyCall.do(context.Background(), newClient(t, srv.URL, idenfy.WithHTTPClient(hc))); err != nil {
		t.Fatalf("VerifySMS through a custom client = %v, want nil", err)
	}
	if n := trips.Load(); n != 1 {
		t.Errorf("custom client made %d round trips, want 1", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// checkTransportError checks err is a *TransportError with the wanted
// Written and Timeout, that Ambiguous follows Written, and that no secret
// leaks.
func checkTransportError(t *testing.T, name string, err error, wantWritten, wantTimeout bool) *idenfy.TransportError {
	t.Helper()
	var te *idenfy.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("%s = %v (%T), want *idenfy.TransportError", name, err, err)
	}
	if te.Written != wantWritten {
		t.Errorf("%s Written = %v, want %v (error %v)", name, te.Written, wantWritten, err)
	}
	if got := te.Timeout(); got != wantTimeout {
		t.Errorf("%s Timeout() = %v, want %v (error %v)", name, got, wantTimeout, err)
	}
	if got := idenfy.Ambiguous(err); got != wantWritten {
		t.Errorf("Ambiguous(%v) = %v, want %v", err, got, wantWritten)
	}
	if te.Op != "send-sms" && te.Op != "verify-sms" {
		t.Errorf("%s Op = %q, want send-sms or verify-sms", name, te.Op)
	}
	if !errors.Is(err, te.Err) {
		t.Errorf("%s does not unwrap to its Err %v", name, te.Err)
	}
	checkSentinels(t, name, err)
	checkNoSecrets(t, err)
	return te
}

func TestDialFailureIsNotAmbiguous(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, "http://"+addr)
	for _, cl := range bothCalls {
		err := cl.do(context.Background(), c)
		checkTransportError(t, cl.name+" to a closed port", err, false, false)
	}
}

// TestDropAfterRequestIsAmbiguous closes the connection once the whole
// request was read, as a vendor that crashed mid-call would.
func TestDropAfterRequestIsAmbiguous(t *testing.T) {
	var bodies atomic.Int32
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if b, err := io.ReadAll(r.Body); err == nil && json.Valid(b) {
			bodies.Add(1)
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack() = %v", err)
			return
		}
		conn.Close()
	})
	c := newClient(t, srv.URL)
	for _, cl := range bothCalls {
		err := cl.do(context.Background(), c)
		checkTransportError(t, cl.name+" dropped after the request", err, true, false)
	}
	if n := bodies.Load(); n != 2 {
		t.Errorf("server read %d whole requests, want 2", n)
	}
}

// hangingServer reads each request, signals it on arrived, and answers
// nothing until the client goes away or the test ends.
func hangingServer(t *testing.T, writeHeader bool) (srv *httptest.Server, arrived <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 10)
	release := make(chan struct{})
	srv = serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if writeHeader {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"request_id": "3d50`)
			http.NewResponseController(w).Flush()
		}
		ch <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv, ch
}

func TestTimeoutAfterRequestIsAmbiguous(t *testing.T) {
	srv, _ := hangingServer(t, false)
	c := newClient(t, srv.URL, idenfy.WithTimeout(100*time.Millisecond))
	for _, cl := range bothCalls {
		err := cl.do(context.Background(), c)
		checkTransportError(t, cl.name+" to a server that hangs", err, true, true)
	}
}

func TestTimeoutReadingBodyIsAmbiguous(t *testing.T) {
	srv, _ := hangingServer(t, true)
	c := newClient(t, srv.URL, idenfy.WithTimeout(100*time.Millisecond))
	err := sendCall.do(context.Background(), c)
	checkTransportError(t, "SendSMS to a server that stops mid-body", err, true, true)
}

func TestCallerDeadlineAfterRequestIsAmbiguous(t *testing.T) {
	srv, _ := hangingServer(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := verifyCall.do(ctx, newClient(t, srv.URL))
	checkTransportError(t, "VerifySMS past the caller's deadline", err, true, true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false, want true", err)
	}
}

func TestCancelAfterRequestIsAmbiguous(t *testing.T) {
	srv, arrived := hangingServer(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	err := sendCall.do(ctx, newClient(t, srv.URL))
	checkTransportError(t, "SendSMS cancelled once the server had it", err, true, false)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false, want true", err)
	}
}

func TestCancelBeforeSendingIsNotAmbiguous(t *testing.T) {
	var hits atomic.Int32
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		answer(200, nil, `{"request_id":"`+testRequestID+`","is_verified":true}`)(w, r)
	})
	c := newClient(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, cl := range bothCalls {
		err := cl.do(ctx, c)
		checkTransportError(t, cl.name+" with a cancelled context", err, false, false)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("errors.Is(%v, context.Canceled) = false, want true", err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
}

func TestAmbiguous(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil", err: nil, want: false},
		{name: "other error", err: errors.New("boom"), want: false},
		{name: "sentinel alone", err: idenfy.ErrServerError, want: false},
		{name: "written transport error", err: &idenfy.TransportError{Op: "send-sms", Written: true, Err: io.EOF}, want: true},
		{name: "unwritten transport error", err: &idenfy.TransportError{Op: "send-sms", Err: io.EOF}, want: false},
		{name: "wrapped written transport error", err: fmt.Errorf("attempt 2: %w", &idenfy.TransportError{Op: "verify-sms", Written: true, Err: io.EOF}), want: true},
		{name: "wrapped 502", err: fmt.Errorf("attempt 2: %w", &idenfy.APIError{Status: 502}), want: true},
		{name: "429", err: &idenfy.APIError{Status: 429}, want: false},
		{name: "503", err: &idenfy.APIError{Status: 503}, want: false},
		{name: "400", err: &idenfy.APIError{Status: 400}, want: false},
		{name: "response error", err: &idenfy.ResponseError{Status: 200, Reason: "body is empty"}, want: true},
	}
	for _, tt := range tests {
		if got := idenfy.Ambiguous(tt.err); got != tt.want {
			t.Errorf("Ambiguous(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestConcurrentCalls sends 200 calls at once through one Client; the
// server answers each with data derived from its request, so that a mixed
// up answer shows.
func TestConcurrentCalls(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"identifier":"JSON_ERROR"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case idenfy.PathSendSMS:
			fmt.Fprintf(w, `{"request_id": "req%s"}`, strings.TrimPrefix(req["phone_number"], "+"))
		case idenfy.PathVerifySMS:
			code, _ := strconv.Atoi(req["received_code"])
			fmt.Fprintf(w, `{"is_verified": %t}`, code%3 == 0)
		}
	})
	c := newClient(t, srv.URL, idenfy.WithMaxConnections(16))
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				phone := fmt.Sprintf("+3706%07d", i)
				got, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: phone})
				if want := "req" + phone[1:]; err != nil || got.RequestID != want {
					t.Errorf("SendSMS(%s) = %+v, %v, want request_id %s", phone, got, err, want)
				}
				return
			}
			code := fmt.Sprintf("%04d", i)
			got, err := c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: testRequestID, ReceivedCode: code})
			if want := i%3 == 0; err != nil || got.IsVerified != want {
				t.Errorf("VerifySMS(%s) = %+v, %v, want is_verified %v", code, got, err, want)
			}
		})
	}
	wg.Wait()
}
