package idenfytest

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

const (
	sendPath    = "/fraud/send-sms"
	verifyPath  = "/fraud/verify-sms"
	maxBodySize = 64 << 10

	maxSenderName   = 11
	minRequestIDLen = 32
	maxRequestIDLen = 40
	codeLen         = 4
)

// ServeHTTP serves the vendor API (POST /fraud/send-sms, POST
// /fraud/verify-sms) and the control API under /_sim/. Every answer has a JSON
// body.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == sendPath:
		s.sendCalls.Add(1)
		s.serveVendor(w, r, s.handleSend)
	case r.URL.Path == verifyPath:
		s.verifyCalls.Add(1)
		s.serveVendor(w, r, s.handleVerify)
	case strings.HasPrefix(r.URL.Path, controlPrefix):
		s.serveControl(w, r)
	default:
		writeVendor(w, http.StatusNotFound, detail{"Not found."})
	}
}

// Answer bodies. Errors without an identifier are the vendor's framework
// errors (auth, routing); validation errors carry one.
type (
	detail struct {
		Detail string `json:"detail"`
	}
	vendorError struct {
		Identifier string `json:"identifier"`
		Message    string `json:"message"`
	}
	sendAnswer struct {
		RequestID string `json:"request_id"`
	}
	verifyAnswer struct {
		IsVerified bool `json:"is_verified"`
	}
)

type answer struct {
	status int
	body   any
}

// serveVendor runs one vendor call through the faults: latency first, then a
// queued Status or Drop fault replaces the answer, before or (Processed) after
// the call took effect.
func (s *Simulator) serveVendor(w http.ResponseWriter, r *http.Request, handle func([]byte) answer) {
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodySize))
	if !s.delay(r.Context()) {
		dropConnection(w)
		return
	}
	f, faulted := s.takeFault()
	if faulted && !f.Processed {
		answerFault(w, f)
		return
	}
	a := s.vendorAnswer(r, body, readErr, handle)
	if faulted {
		answerFault(w, f)
		return
	}
	writeVendor(w, a.status, a.body)
}

func (s *Simulator) vendorAnswer(r *http.Request, body []byte, readErr error, handle func([]byte) answer) answer {
	var tooLarge *http.MaxBytesError
	switch {
	case r.Method != http.MethodPost:
		return answer{http.StatusMethodNotAllowed, detail{fmt.Sprintf("Method %q not allowed.", r.Method)}}
	case !s.authorized(r):
		return answer{http.StatusUnauthorized, detail{"Invalid username/password."}}
	case errors.As(readErr, &tooLarge):
		return answer{http.StatusRequestEntityTooLarge, detail{"Request body too large."}}
	case readErr != nil:
		return answer{http.StatusBadRequest, detail{"Could not read the request body."}}
	}
	return handle(body)
}

// authorized compares in constant time, and both parts, so that timing tells
// nothing about which was wrong.
func (s *Simulator) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(s.apiKey))
	passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(s.apiSecret))
	return ok && userOK&passOK == 1
}

func (s *Simulator) handleSend(body []byte) answer {
	phone, sender, bad := parseSend(body)
	if bad != nil {
		return answer{http.StatusBadRequest, bad}
	}
	return answer{http.StatusOK, sendAnswer{s.send(phone, sender)}}
}

func (s *Simulator) handleVerify(body []byte) answer {
	id, code, bad := parseVerify(body)
	if bad != nil {
		return answer{http.StatusBadRequest, bad}
	}
	verified, found := s.verify(id, code)
	if !found {
		return answer{http.StatusBadRequest, vendorError{"BAD_VALUE", "request_id not found."}}
	}
	return answer{http.StatusOK, verifyAnswer{verified}}
}

// The messages below never quote the values received: they may be a phone
// number or a code.

func parseSend(body []byte) (phone, sender string, bad *vendorError) {
	f, bad := parseObject(body)
	if bad != nil {
		return "", "", bad
	}
	if phone, bad = f.required("phone_number"); bad != nil {
		return "", "", bad
	}
	if !isE164(phone) {
		return "", "", badValue("phone_number", "Enter a phone number in E.164 format.")
	}
	sender, present, bad := f.text("sender_name")
	switch {
	case bad != nil:
		return "", "", bad
	case !present:
		sender = DefaultSenderName
	case sender == "":
		return "", "", badValue("sender_name", "This field may not be blank.")
	case utf8.RuneCountInString(sender) > maxSenderName:
		return "", "", badValue("sender_name", fmt.Sprintf("Ensure this field has no more than %d characters.", maxSenderName))
	}
	return phone, sender, nil
}

func parseVerify(body []byte) (id, code string, bad *vendorError) {
	f, bad := parseObject(body)
	if bad != nil {
		return "", "", bad
	}
	if id, bad = f.required("request_id"); bad != nil {
		return "", "", bad
	}
	if n := utf8.RuneCountInString(id); n < minRequestIDLen || n > maxRequestIDLen {
		return "", "", badValue("request_id", fmt.Sprintf("Ensure this field has %d to %d characters.", minRequestIDLen, maxRequestIDLen))
	}
	if code, bad = f.required("received_code"); bad != nil {
		return "", "", bad
	}
	if utf8.RuneCountInString(code) != codeLen {
		return "", "", badValue("received_code", fmt.Sprintf("Ensure this field has exactly %d characters.", codeLen))
	}
	return id, code, nil
}

// fields are the members of a JSON object body, decoded one by one so that a
// missing member, null and a value of the wrong type can be told apart.
type fields map[string]json.RawMessage

func parseObject(body []byte) (fields, *vendorError) {
	var f fields
	if err := json.Unmarshal(body, &f); err != nil || f == nil {
		return nil, &vendorError{"JSON_ERROR", "The request body must be a JSON object."}
	}
	return f, nil
}

// text returns member name, which must be a string; present is false if it is
// missing or null.
func (f fields) text(name string) (v string, present bool, bad *vendorError) {
	raw, ok := f[name]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", true, badValue(name, "Not a valid string.")
	}
	return v, true, nil
}

func (f fields) required(name string) (string, *vendorError) {
	v, present, bad := f.text(name)
	switch {
	case bad != nil:
		return "", bad
	case !present || v == "":
		return "", &vendorError{"MISSING_VALUE", name + ": This field is required."}
	}
	return v, nil
}

func badValue(name, msg string) *vendorError {
	return &vendorError{"BAD_VALUE", name + ": " + msg}
}

// isE164 reports whether s is "+" and 7 to 15 digits, the first not 0.
func isE164(s string) bool {
	digits, ok := strings.CutPrefix(s, "+")
	if !ok || len(digits) < 7 || len(digits) > 15 || digits[0] == '0' {
		return false
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// writeVendor writes a vendor answer with the headers its status calls for.
func writeVendor(w http.ResponseWriter, status int, body any) {
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="api"`)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		panic("idenfytest: encoding an answer: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
