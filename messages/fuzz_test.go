package messages_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// The contract's rules, written again independently of the package.
var (
	e164Pattern       = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	senderNamePattern = regexp.MustCompile(`^[A-Za-z0-9\-._&+' ]{1,11}$`)
	codePattern       = regexp.MustCompile(`^[0-9]{4}$`)
	digitRunPattern   = regexp.MustCompile(`[0-9]{4,}`)
)

func FuzzDecodeSendRequest(f *testing.F) {
	for _, seed := range []string{
		`{"phone_number": "+12025550163", "sender_name": "The Sender", "correlation_id": "signup-42"}`,
		`{"phone_number":"+1234567"}`,
		`{"phone_number":"+123456789012345","sender_name":"A-B.C_D&E+'"}`,
		`{"phone_number":"+1234567890123456"}`,
		`{"phone_number":"+02025550163"}`,
		`{"phone_number":"+1 202 555 0163"}`,
		`{"phone_number":"+١٢٠٢٥٥٥٠١٦٣"}`,
		`{"phone_number":12025550163,"correlation_id":"c"}`,
		`{"phone_number":null,"sender_name":null,"correlation_id":null}`,
		`{"phone_number":"+12025550163","sender_name":""}`,
		`{"phone_number":"+12025550163","sender_name":" x "}`,
		`{"phone_number":"+12025550163","sender_name":"Señor"}`,
		`{"phone_number":"+12025550163","correlation_id":"a\u0000b"}`,
		`{"phone_number":"+12025550163","correlation_id":"` + strings.Repeat("é", 128) + `"}`,
		`{"phone_number":"+12025550163","correlation_id":"<&>\u2028"}`,
		`{"PHONE_NUMBER":"+12025550163","Sender_Name":"x"}`,
		`{"phone_number":"+12025550163","phone_number":"+44791112345"}`,
		`{"phone_number":"+12025550163","x":{"y":[1,2,{"z":null}]}}`,
		`{"phone_number":"+12025550163"} x`,
		`{"phone_number":"+12025550163"}{}`,
		"{\"phone_number\":\"+12025550163\",\"correlation_id\":\"\xff\xfe\"}",
		`[]`, `null`, `"x"`, `1`, ``, `{`, ` `,
		paddedSend(messages.MaxMessageSize), paddedSend(messages.MaxMessageSize + 1),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := messages.DecodeSendRequest(data)
		checkFuzzedFailure(t, data, err, req.CorrelationID)
		checkMasking(t, req.PhoneNumber)
		if err != nil {
			return
		}
		checkAcceptedEnvelope(t, data)
		if !e164Pattern.MatchString(req.PhoneNumber) {
			t.Errorf("DecodeSendRequest(%q) accepted phone_number %q, not E.164", data, req.PhoneNumber)
		}
		if req.SenderName != "" {
			if !senderNamePattern.MatchString(req.SenderName) || strings.TrimSpace(req.SenderName) != req.SenderName ||
				!strings.ContainsFunc(req.SenderName, isASCIIAlnum) {
				t.Errorf("DecodeSendRequest(%q) accepted sender_name %q", data, req.SenderName)
			}
		}
		checkCorrelationID(t, data, req.CorrelationID)

		again, err := messages.DecodeSendRequest(mustMarshal(t, req))
		if err != nil {
			t.Fatalf("DecodeSendRequest(json.Marshal(%+v)) = %v, want it accepted again", req, err)
		}
		if diff := cmp.Diff(req, again); diff != "" {
			t.Errorf("DecodeSendRequest(json.Marshal(%+v)) mismatch (-first +second):\n%s", req, diff)
		}
	})
}

func FuzzDecodeVerifyRequest(f *testing.F) {
	for _, seed := range []string{
		`{"request_id": "3d50e1584e0946e789e0185c009aaadf", "received_code": "1234", "correlation_id": "signup-42"}`,
		`{"request_id":"` + strings.Repeat("a", 40) + `","received_code":"0000"}`,
		`{"request_id":"` + strings.Repeat("a", 41) + `","received_code":"0000"}`,
		`{"request_id":"` + strings.Repeat("a", 31) + `","received_code":"0000"}`,
		`{"request_id":"` + strings.Repeat("é", 32) + `","received_code":"1234"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaad\u3000","received_code":"1234"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaad\u0000","received_code":"1234"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"١٢٣٤"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"12345"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":1234,"correlation_id":"c"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":" 123"}`,
		`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"1234","correlation_id":"` + strings.Repeat("c", 129) + `"}`,
		"{\"request_id\":\"3d50e1584e0946e789e0185c009aaad\xff\",\"received_code\":\"1234\"}",
		`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"1234"}]`,
		`[]`, `null`, `{}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := messages.DecodeVerifyRequest(data)
		checkFuzzedFailure(t, data, err, req.CorrelationID)
		if err != nil {
			return
		}
		checkAcceptedEnvelope(t, data)
		n := utf8.RuneCountInString(req.RequestID)
		if !utf8.ValidString(req.RequestID) || n < 32 || n > 40 ||
			strings.ContainsFunc(req.RequestID, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			t.Errorf("DecodeVerifyRequest(%q) accepted request_id %q", data, req.RequestID)
		}
		if !codePattern.MatchString(req.ReceivedCode) {
			t.Errorf("DecodeVerifyRequest(%q) accepted received_code %q", data, req.ReceivedCode)
		}
		checkCorrelationID(t, data, req.CorrelationID)

		again, err := messages.DecodeVerifyRequest(mustMarshal(t, req))
		if err != nil {
			t.Fatalf("DecodeVerifyRequest(json.Marshal(%+v)) = %v, want it accepted again", req, err)
		}
		if diff := cmp.Diff(req, again); diff != "" {
			t.Errorf("DecodeVerifyRequest(json.Marshal(%+v)) mismatch (-first +second):\n%s", req, diff)
		}
	})
}

// checkFuzzedFailure checks a refusal: an invalid-input *messages.Error that
// is not retryable, with only a valid correlation ID echoed.
func checkFuzzedFailure(t *testing.T, data []byte, err error, correlationID string) {
	t.Helper()
	if err == nil {
		return
	}
	var e *messages.Error
	if !errors.As(err, &e) {
		t.Fatalf("decode(%q) = %v (%T), want *messages.Error", data, err, err)
	}
	if !e.Code.IsInvalidInput() || e.Retryable {
		t.Errorf("decode(%q) = %v (retryable %v), want a non-retryable invalid-input code", data, err, e.Retryable)
	}
	if correlationID != "" {
		checkCorrelationID(t, data, correlationID)
	}
}

func checkAcceptedEnvelope(t *testing.T, data []byte) {
	t.Helper()
	if len(data) > messages.MaxMessageSize {
		t.Errorf("decode accepted %d bytes, over the limit of %d", len(data), messages.MaxMessageSize)
	}
	if trimmed := bytes.TrimSpace(data); !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
		t.Errorf("decode(%q) accepted something that is not one JSON object", data)
	}
}

func checkCorrelationID(t *testing.T, data []byte, id string) {
	t.Helper()
	if !utf8.ValidString(id) || utf8.RuneCountInString(id) > 128 || strings.ContainsFunc(id, unicode.IsControl) {
		t.Errorf("decode(%q) returned correlation_id %q, which the contract refuses", data, id)
	}
}

// checkMasking runs the masking helpers on fuzzed text: they must never
// panic nor leave a full number readable.
func checkMasking(t *testing.T, s string) {
	t.Helper()
	if r := messages.RedactText(s); len(r) != len(s) || digitRunPattern.MatchString(r) {
		t.Errorf("RedactText(%q) = %q, want the same length and no run of 4 digits", s, r)
	}
	m := messages.MaskPhone(s)
	cc := messages.CallingCode(s)
	if cc == "" {
		if m != "<masked>" {
			t.Errorf("MaskPhone(%q) = %q, want %q for a number that is not E.164", s, m, "<masked>")
		}
		return
	}
	subscriber := strings.TrimPrefix(m, "+"+cc)
	if shown := len(subscriber) - strings.Count(subscriber, "*"); len(subscriber) == len(m) || shown > 2 {
		t.Errorf("MaskPhone(%q) = %q shows %d subscriber digits, want at most 2", s, m, shown)
	}
}

func isASCIIAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal(%+v) = %v", v, err)
	}
	return data
}

// padToF returns a valid send payload of exactly n bytes.
func paddedSend(n int) string {
	head := `{"phone_number":"+12025550163","padding":"`
	return head + strings.Repeat("x", n-len(head)-2) + `"}`
}

// FuzzFieldNames holds the decoder's scan for repeated or case-variant field
// names to a reference built on encoding/json's tokenizer: for every valid
// JSON object, both must agree on whether a known field is given twice.
func FuzzFieldNames(f *testing.F) {
	for _, seed := range []string{
		`{"phone_number":"+12025550163"}`,
		`{"phone_number":"+12025550163","phone_number":"+447700900123"}`,
		`{"Phone_Number":"+12025550163"}`,
		`{"phone\u005fnumber":"+1","phone_number":"+2"}`,
		`{"a":{"phone_number":1},"phone_number":"+12025550163"}`,
		`{"a":["phone_number","phone_number"],"phone_number":"+12025550163"}`,
		`{"a":"\"phone_number\":","phone_number":"+12025550163"}`,
		`{"sender_name":"x","SENDER_NAME":"y","phone_number":"+12025550163"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var probe map[string]json.RawMessage
		if len(data) > messages.MaxMessageSize || json.Unmarshal(data, &probe) != nil || probe == nil {
			return
		}
		want, typed := referenceFieldProblem(t, data, []string{"phone_number", "sender_name", "correlation_id"})
		if !typed {
			return // a wrong type is refused before names are looked at
		}
		_, err := messages.DecodeSendRequest(data)
		scanned := err != nil && (strings.Contains(err.Error(), "field names are case-sensitive") ||
			strings.Contains(err.Error(), "appears more than once"))
		if want && !scanned {
			t.Fatalf("DecodeSendRequest(%q) = %v, want a repeated-field refusal", data, err)
		}
		if scanned && !want {
			t.Fatalf("DecodeSendRequest(%q) = %v, but no field is repeated", data, err)
		}
	})
}

// referenceFieldProblem reports whether a known field appears twice or in
// another case at the top level of the object data, and whether every value
// of a known field is a string or null.
func referenceFieldProblem(t *testing.T, data []byte, fields []string) (problem, typed bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	typed = true
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		name := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			t.Fatal(err)
		}
		for _, f := range fields {
			if !strings.EqualFold(name, f) {
				continue
			}
			if v := bytes.TrimSpace(value); v[0] != '"' && string(v) != "null" {
				typed = false
			}
			if name != f || seen[f] {
				problem = true
			}
			seen[f] = true
		}
	}
	return problem, typed
}
