package idenfytest_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

func TestAuth(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithCredentials("key-1", "secret-1"))
	const rejected = "+37060000001"
	basic := func(user, pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	tests := []struct {
		name string
		path string
		auth func(*http.Request)
		want int
	}{
		{"no auth", sendPath, func(*http.Request) {}, http.StatusUnauthorized},
		{"default credentials", sendPath, basic(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret), http.StatusUnauthorized},
		{"wrong key", sendPath, basic("key-2", "secret-1"), http.StatusUnauthorized},
		{"wrong secret", sendPath, basic("key-1", "secret-2"), http.StatusUnauthorized},
		{"swapped", sendPath, basic("secret-1", "key-1"), http.StatusUnauthorized},
		{"empty", sendPath, basic("", ""), http.StatusUnauthorized},
		{"bearer token", sendPath, func(r *http.Request) { r.Header.Set("Authorization", "Bearer key-1") }, http.StatusUnauthorized},
		{"verify without auth", verifyPath, func(*http.Request) {}, http.StatusUnauthorized},
		{"verify with wrong secret", verifyPath, basic("key-1", "secret-2"), http.StatusUnauthorized},
		{"right credentials", sendPath, basic("key-1", "secret-1"), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := sendBody(t, rejected)
			if tt.path == verifyPath {
				body = verifyBody(t, strings.Repeat("a", 32), "1234")
			}
			if tt.want == http.StatusOK {
				body = sendBody(t, phone)
			}
			req := newRequest(t, http.MethodPost, s.URL+tt.path, body)
			tt.auth(req)
			r := do(t, req)
			if r.status != tt.want {
				t.Fatalf("POST %s = %d %s, want %d", tt.path, r.status, r.body, tt.want)
			}
			if tt.want != http.StatusUnauthorized {
				return
			}
			if got, want := string(r.body), `{"detail":"Invalid username/password."}`+"\n"; got != want {
				t.Errorf("401 body = %q, want %q (no identifier)", got, want)
			}
			if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("401 WWW-Authenticate = %q, want Basic", got)
			}
		})
	}
	if out := s.Outbox(rejected); len(out) != 0 {
		t.Errorf("Outbox(%q) after rejected sends = %v, want none", rejected, out)
	}
	if out := s.Outbox(phone); len(out) != 1 {
		t.Errorf("Outbox(%q) after one authorized send = %v, want 1 delivery", phone, out)
	}
}

// checkVendorError checks a vendor validation error, and that its message
// does not echo secret.
func checkVendorError(t *testing.T, r response, wantStatus int, wantIdentifier, secret string) {
	t.Helper()
	if r.status != wantStatus {
		t.Fatalf("status = %d %s, want %d", r.status, r.body, wantStatus)
	}
	m := r.members(t)
	if got := m["identifier"]; got != wantIdentifier {
		t.Errorf("identifier = %v, want %v (body %s)", got, wantIdentifier, r.body)
	}
	msg, _ := m["message"].(string)
	if msg == "" {
		t.Errorf("message = %q, want one", msg)
	}
	if secret != "" && strings.Contains(msg, secret) {
		t.Errorf("message %q echoes %q", msg, secret)
	}
}

func TestSendValidation(t *testing.T) {
	const digits = "2025550163" // in every phone number below, never to be echoed
	tests := []struct {
		name string
		body string
		want string // identifier; "" for success
	}{
		{"not JSON", "phone_number=+12025550163", "JSON_ERROR"},
		{"empty body", "", "JSON_ERROR"},
		{"array", `["+12025550163"]`, "JSON_ERROR"},
		{"string", `"+12025550163"`, "JSON_ERROR"},
		{"null", `null`, "JSON_ERROR"},
		{"two objects", `{"phone_number": "+12025550163"} {}`, "JSON_ERROR"},
		{"truncated", `{"phone_number": "+12025550163"`, "JSON_ERROR"},
		{"empty object", `{}`, "MISSING_VALUE"},
		{"phone null", `{"phone_number": null}`, "MISSING_VALUE"},
		{"phone empty", `{"phone_number": ""}`, "MISSING_VALUE"},
		{"phone a number", `{"phone_number": 12025550163}`, "BAD_VALUE"},
		{"no plus", `{"phone_number": "12025550163"}`, "BAD_VALUE"},
		{"double plus", `{"phone_number": "++12025550163"}`, "BAD_VALUE"},
		{"first digit 0", `{"phone_number": "+02025550163"}`, "BAD_VALUE"},
		{"6 digits", `{"phone_number": "+202555"}`, "BAD_VALUE"},
		{"7 digits", `{"phone_number": "+2025550"}`, ""},
		{"15 digits", `{"phone_number": "+120255501639999"}`, ""},
		{"16 digits", `{"phone_number": "+1202555016399999"}`, "BAD_VALUE"},
		{"spaces", `{"phone_number": "+1 2025550163"}`, "BAD_VALUE"},
		{"dashes", `{"phone_number": "+1-2025550163"}`, "BAD_VALUE"},
		{"letters", `{"phone_number": "+1202555016a"}`, "BAD_VALUE"},
		{"full-width digits", `{"phone_number": "+12025550163１"}`, "BAD_VALUE"},
		{"unknown members ignored", `{"phone_number": "+12025550163", "colour": "blue"}`, ""},
		{"sender null is the default", `{"phone_number": "+12025550163", "sender_name": null}`, ""},
		{"sender 11 characters", `{"phone_number": "+12025550163", "sender_name": "ABCDEFGHIJK"}`, ""},
		{"sender 11 non-ASCII characters", `{"phone_number": "+12025550163", "sender_name": "Šiaulių Ban"}`, ""},
		{"sender 12 characters", `{"phone_number": "+12025550163", "sender_name": "ABCDEFGHIJKL"}`, "BAD_VALUE"},
		{"sender empty", `{"phone_number": "+12025550163", "sender_name": ""}`, "BAD_VALUE"},
		{"sender a number", `{"phone_number": "+12025550163", "sender_name": 42}`, "BAD_VALUE"},
		{"bad sender with bad phone", `{"phone_number": "12025550163", "sender_name": "ABCDEFGHIJKL"}`, "BAD_VALUE"},
	}
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := vendorCall(t, s, sendPath, tt.body)
			if tt.want != "" {
				checkVendorError(t, r, http.StatusBadRequest, tt.want, digits)
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("send-sms(%q) = %d %s, want 200", tt.body, r.status, r.body)
			}
			if id, _ := r.members(t)["request_id"].(string); id == "" {
				t.Errorf("send-sms(%q) = %s, want a request_id", tt.body, r.body)
			}
		})
	}
}

func TestVerifyValidation(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	unknown32 := strings.Repeat("0", 32)
	tests := []struct {
		name string
		body func(id string) string // id is a request_id just issued
		want string                 // identifier; "" for is_verified false
		msg  string                 // in the message, if not ""
	}{
		{"not JSON", func(string) string { return "request_id=x" }, "JSON_ERROR", ""},
		{"array", func(string) string { return "[]" }, "JSON_ERROR", ""},
		{"empty object", func(string) string { return `{}` }, "MISSING_VALUE", "request_id"},
		{"request_id null", func(string) string { return `{"request_id": null, "received_code": "9876"}` }, "MISSING_VALUE", "request_id"},
		{"request_id empty", func(string) string { return `{"request_id": "", "received_code": "9876"}` }, "MISSING_VALUE", "request_id"},
		{"request_id a number", func(string) string { return `{"request_id": 42, "received_code": "9876"}` }, "BAD_VALUE", "request_id"},
		{"request_id 31 characters", func(string) string { return verifyBody(t, strings.Repeat("0", 31), "9876") }, "BAD_VALUE", "request_id"},
		{"request_id 41 characters", func(string) string { return verifyBody(t, strings.Repeat("0", 41), "9876") }, "BAD_VALUE", "request_id"},
		{"request_id 32 characters, never issued", func(string) string { return verifyBody(t, unknown32, "9876") }, "BAD_VALUE", "request_id not found"},
		{"request_id 40 characters, never issued", func(string) string { return verifyBody(t, strings.Repeat("0", 40), "9876") }, "BAD_VALUE", "request_id not found"},
		{"request_id with a suffix", func(id string) string { return verifyBody(t, id+"0", "9876") }, "BAD_VALUE", "request_id not found"},
		{"code missing", func(id string) string { return jsonText(t, map[string]string{"request_id": id}) }, "MISSING_VALUE", "received_code"},
		{"code null", func(id string) string { return `{"request_id": "` + id + `", "received_code": null}` }, "MISSING_VALUE", "received_code"},
		{"code empty", func(id string) string { return verifyBody(t, id, "") }, "MISSING_VALUE", "received_code"},
		{"code a number", func(id string) string { return `{"request_id": "` + id + `", "received_code": 9876}` }, "BAD_VALUE", "received_code"},
		{"code 3 characters", func(id string) string { return verifyBody(t, id, "987") }, "BAD_VALUE", "received_code"},
		{"code 5 characters", func(id string) string { return verifyBody(t, id, "98765") }, "BAD_VALUE", "received_code"},
		{"code 4 letters", func(id string) string { return verifyBody(t, id, "abcd") }, "", ""},
		{"code 4 non-ASCII characters", func(id string) string { return verifyBody(t, id, "ąčęė") }, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body(sendSMS(t, s, phone))
			r := vendorCall(t, s, verifyPath, body)
			if tt.want == "" {
				if got := string(r.body); r.status != http.StatusOK || got != `{"is_verified":false}`+"\n" {
					t.Errorf("verify-sms(%s) = %d %q, want 200 is_verified false", body, r.status, got)
				}
				return
			}
			checkVendorError(t, r, http.StatusBadRequest, tt.want, "987")
			if msg, _ := r.members(t)["message"].(string); !strings.Contains(msg, tt.msg) {
				t.Errorf("verify-sms(%s) message = %q, want it to contain %q", body, msg, tt.msg)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for range 100 {
		id := sendSMS(t, s, phone)
		if !hex32.MatchString(id) {
			t.Fatalf("request_id = %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("request_id %q issued twice", id)
		}
		seen[id] = true
	}
}

func TestSMS(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		sender string
	}{
		{"default sender", `{"phone_number": "+12025550163"}`, "iDenfy"},
		{"sender name", `{"phone_number": "+12025550163", "sender_name": "The Sender"}`, "The Sender"},
	}
	digits4 := regexp.MustCompile(`^[0-9]{4}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			r := vendorCall(t, s, sendPath, tt.body)
			id, _ := r.members(t)["request_id"].(string)
			out := s.Outbox(phone)
			if len(out) != 1 {
				t.Fatalf("Outbox(%q) = %v, want one SMS", phone, out)
			}
			d := out[0]
			if !digits4.MatchString(d.Code) {
				t.Errorf("code = %q, want 4 digits", d.Code)
			}
			want := idenfytest.Delivery{
				PhoneNumber: phone,
				Channel:     idenfytest.ChannelSMS,
				Code:        d.Code,
				RequestID:   id,
				SenderName:  tt.sender,
				Text:        tt.sender + " code: " + d.Code + ". Valid for 5 minutes.",
				At:          t0,
			}
			if d != want {
				t.Errorf("Outbox(%q)[0] = %+v, want %+v", phone, d, want)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	s := idenfytest.NewServer(t)
	tests := []struct {
		name      string
		method    string
		path      string
		want      int
		wantAllow string
	}{
		{"GET send-sms", http.MethodGet, sendPath, http.StatusMethodNotAllowed, "POST"},
		{"PUT verify-sms", http.MethodPut, verifyPath, http.StatusMethodNotAllowed, "POST"},
		{"trailing slash", http.MethodPost, sendPath + "/", http.StatusNotFound, ""},
		{"other vendor path", http.MethodPost, "/fraud/send-email", http.StatusNotFound, ""},
		{"root", http.MethodGet, "/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, tt.method, s.URL+tt.path, sendBody(t, phone))
			req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
			r := do(t, req)
			if r.status != tt.want {
				t.Fatalf("%s %s = %d, want %d", tt.method, tt.path, r.status, tt.want)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("%s %s Allow = %q, want %q", tt.method, tt.path, got, tt.wantAllow)
			}
			if got := r.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("%s %s Content-Type = %q, want application/json", tt.method, tt.path, got)
			}
			r.members(t)
		})
	}
}

func TestBodySize(t *testing.T) {
	s := idenfytest.NewServer(t)
	body := func(size int) string {
		prefix := `{"phone_number": "+12025550163", "padding": "`
		return prefix + strings.Repeat("x", size-len(prefix)-2) + `"}`
	}
	tests := []struct {
		name string
		size int
		want int
	}{
		{"64 KiB", 64 << 10, http.StatusOK},
		{"one byte more", 64<<10 + 1, http.StatusRequestEntityTooLarge},
		{"1 MiB", 1 << 20, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := vendorCall(t, s, sendPath, body(tt.size))
			if r.status != tt.want {
				t.Errorf("send-sms(%d bytes) = %d %s, want %d", tt.size, r.status, r.body, tt.want)
			}
			r.members(t)
		})
	}
}
