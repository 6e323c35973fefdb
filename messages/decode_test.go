package messages_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

const (
	validPhone     = "+12025550163"
	validRequestID = "3d50e1584e0946e789e0185c009aaadf" // 32 characters, as the vendor returns
)

// sendJSON builds a send payload around a raw JSON value for phone_number.
func sendJSON(phoneValue string) string {
	return `{"phone_number":` + phoneValue + `}`
}

// checkDecodeError checks err against the contract: nil when wantCode is
// empty, otherwise an *messages.Error with that code, the code's usual
// retryability, a message, and none of the secrets the input carried.
func checkDecodeError(t *testing.T, call string, err error, wantCode messages.Code, secrets ...string) {
	t.Helper()
	if wantCode == "" {
		if err != nil {
			t.Errorf("%s = %v, want nil error", call, err)
		}
		return
	}
	var e *messages.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s = %v (%T), want *messages.Error with code %s", call, err, err, wantCode)
	}
	if e.Code != wantCode {
		t.Errorf("%s code = %s, want %s (error %v)", call, e.Code, wantCode, err)
	}
	if e.Retryable != e.Code.Retryable() {
		t.Errorf("%s Retryable = %v, want %v as Code.Retryable says", call, e.Retryable, e.Code.Retryable())
	}
	if !e.Code.IsInvalidInput() {
		t.Errorf("%s code %s: IsInvalidInput() = false, want true for a decoding error", call, e.Code)
	}
	if e.Message == "" {
		t.Errorf("%s Message is empty, want an explanation", call)
	}
	if got, want := e.Error(), string(e.Code)+": "+e.Message; got != want {
		t.Errorf("%s Error() = %q, want %q", call, got, want)
	}
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(e.Message, s) {
			t.Errorf("%s Message %q echoes input %q", call, e.Message, s)
		}
	}
}

func TestDecodeSendRequest(t *testing.T) {
	long := func(r string, n int) string { return strings.Repeat(r, n) }
	tests := []struct {
		name     string
		in       string
		want     messages.SendRequest
		wantCode messages.Code // empty: accepted
	}{
		// The contract's example and its variations.
		{name: "design example", in: `{"phone_number": "+12025550163", "sender_name": "The Sender", "correlation_id": "signup-42"}`,
			want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "The Sender", CorrelationID: "signup-42"}},
		{name: "phone only", in: sendJSON(`"+12025550163"`), want: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "surrounding whitespace", in: " \t\r\n" + sendJSON(`"+12025550163"`) + "\n\t ", want: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "unknown fields ignored", in: `{"phone_number":"+12025550163","extra":{"nested":[1,2,{"x":null}]},"locale":"en","n":5}`,
			want: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "escaped string", in: `{"phone_number":"\u002b12025550163"}`, want: messages.SendRequest{PhoneNumber: validPhone}},

		// Size limit.
		{name: "exactly 4096 bytes", in: paddedSend(messages.MaxMessageSize), want: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "4097 bytes", in: paddedSend(messages.MaxMessageSize + 1), wantCode: messages.CodeInvalidRequest},
		{name: "4097 bytes of whitespace around a valid object", in: sendJSON(`"+12025550163"`) + long(" ", messages.MaxMessageSize+1-len(sendJSON(`"+12025550163"`))),
			wantCode: messages.CodeInvalidRequest},

		// Not JSON.
		{name: "empty", in: "", wantCode: messages.CodeInvalidRequest},
		{name: "whitespace only", in: " \n\t", wantCode: messages.CodeInvalidRequest},
		{name: "plain text", in: "+12025550163", wantCode: messages.CodeInvalidRequest},
		{name: "open brace only", in: "{", wantCode: messages.CodeInvalidRequest},
		{name: "unquoted keys", in: `{phone_number:"+12025550163"}`, wantCode: messages.CodeInvalidRequest},
		{name: "single quotes", in: `{'phone_number':'+12025550163'}`, wantCode: messages.CodeInvalidRequest},
		{name: "truncated", in: `{"phone_number":"+1202555`, wantCode: messages.CodeInvalidRequest},
		{name: "trailing comma", in: `{"phone_number":"+12025550163",}`, wantCode: messages.CodeInvalidRequest},
		{name: "invalid escape", in: `{"phone_number":"\x"}`, wantCode: messages.CodeInvalidRequest},

		// Not an object.
		{name: "array", in: `["+12025550163"]`, wantCode: messages.CodeInvalidRequest},
		{name: "array of object", in: `[` + sendJSON(`"+12025550163"`) + `]`, wantCode: messages.CodeInvalidRequest},
		{name: "string", in: `"+12025550163"`, wantCode: messages.CodeInvalidRequest},
		{name: "null", in: `null`, wantCode: messages.CodeInvalidRequest},
		{name: "number", in: `12025550163`, wantCode: messages.CodeInvalidRequest},
		{name: "bool", in: `true`, wantCode: messages.CodeInvalidRequest},

		// Trailing garbage.
		{name: "trailing text", in: sendJSON(`"+12025550163"`) + " x", wantCode: messages.CodeInvalidRequest},
		{name: "two objects", in: sendJSON(`"+12025550163"`) + `{}`, wantCode: messages.CodeInvalidRequest},
		{name: "trailing comma after object", in: sendJSON(`"+12025550163"`) + `,`, wantCode: messages.CodeInvalidRequest},
		{name: "trailing brace", in: sendJSON(`"+12025550163"`) + `}`, wantCode: messages.CodeInvalidRequest},

		// Wrong field types.
		{name: "phone_number number", in: sendJSON(`12025550163`), wantCode: messages.CodeInvalidRequest},
		{name: "phone_number bool", in: sendJSON(`true`), wantCode: messages.CodeInvalidRequest},
		{name: "phone_number array", in: sendJSON(`["+12025550163"]`), wantCode: messages.CodeInvalidRequest},
		{name: "phone_number object", in: sendJSON(`{"e164":"+12025550163"}`), wantCode: messages.CodeInvalidRequest},
		{name: "sender_name number", in: `{"phone_number":"+12025550163","sender_name":42}`, wantCode: messages.CodeInvalidRequest},
		{name: "sender_name bool", in: `{"phone_number":"+12025550163","sender_name":false}`, wantCode: messages.CodeInvalidRequest},
		{name: "sender_name array", in: `{"phone_number":"+12025550163","sender_name":["a"]}`, wantCode: messages.CodeInvalidRequest},
		{name: "correlation_id number", in: `{"phone_number":"+12025550163","correlation_id":42}`, wantCode: messages.CodeInvalidRequest},
		{name: "correlation_id object", in: `{"phone_number":"+12025550163","correlation_id":{}}`, wantCode: messages.CodeInvalidRequest},
		// null reads as absent: the optional fields keep their default, a
		// null phone_number is a missing one.
		{name: "phone_number null", in: sendJSON(`null`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "sender_name null", in: `{"phone_number":"+12025550163","sender_name":null}`, want: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "correlation_id null", in: `{"phone_number":"+12025550163","correlation_id":null}`, want: messages.SendRequest{PhoneNumber: validPhone}},

		// Phone number rules.
		{name: "phone missing", in: `{}`, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone empty", in: sendJSON(`""`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone without plus", in: sendJSON(`"12025550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone 00 prefix", in: sendJSON(`"0012025550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone leading 0 after plus", in: sendJSON(`"+02025550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone plus only", in: sendJSON(`"+"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone 6 digits", in: sendJSON(`"+123456"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone 7 digits", in: sendJSON(`"+1234567"`), want: messages.SendRequest{PhoneNumber: "+1234567"}},
		{name: "phone 15 digits", in: sendJSON(`"+123456789012345"`), want: messages.SendRequest{PhoneNumber: "+123456789012345"}},
		{name: "phone 16 digits", in: sendJSON(`"+1234567890123456"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone spaces", in: sendJSON(`"+1 202 555 0163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone leading space", in: sendJSON(`" +12025550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone trailing newline", in: sendJSON(`"+12025550163\n"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone dashes", in: sendJSON(`"+1-202-555-0163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone parentheses", in: sendJSON(`"+1(202)5550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone letters", in: sendJSON(`"+1202555O163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone double plus", in: sendJSON(`"++12025550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone plus inside", in: sendJSON(`"+1202+5550163"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone arabic-indic digits", in: sendJSON(`"+١٢٠٢٥٥٥٠١٦٣"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone fullwidth digits", in: sendJSON(`"+１２０２５５５０１６３"`), wantCode: messages.CodeInvalidPhoneNumber},
		{name: "phone fullwidth plus", in: sendJSON(`"＋12025550163"`), wantCode: messages.CodeInvalidPhoneNumber},

		// Sender name rules.
		{name: "sender absent", in: sendJSON(`"+12025550163"`), want: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "sender empty", in: `{"phone_number":"+12025550163","sender_name":""}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender 1 char", in: `{"phone_number":"+12025550163","sender_name":"X"}`, want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "X"}},
		{name: "sender 11 chars", in: `{"phone_number":"+12025550163","sender_name":"ABCDEFGHIJK"}`, want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "ABCDEFGHIJK"}},
		{name: "sender 12 chars", in: `{"phone_number":"+12025550163","sender_name":"ABCDEFGHIJKL"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender allowed punctuation", in: `{"phone_number":"+12025550163","sender_name":"A-B.C_D&E+'"}`, want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "A-B.C_D&E+'"}},
		{name: "sender digits only", in: `{"phone_number":"+12025550163","sender_name":"12345"}`, want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "12345"}},
		{name: "sender inner space", in: `{"phone_number":"+12025550163","sender_name":"The Sender"}`, want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "The Sender"}},
		{name: "sender angle brackets", in: `{"phone_number":"+12025550163","sender_name":"<script>"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender exclamation", in: `{"phone_number":"+12025550163","sender_name":"Sender!"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender non-ASCII letter", in: `{"phone_number":"+12025550163","sender_name":"Señor"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender 11 non-ASCII runes", in: `{"phone_number":"+12025550163","sender_name":"ééééééééééé"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender emoji", in: `{"phone_number":"+12025550163","sender_name":"Shop😀"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender tab", in: `{"phone_number":"+12025550163","sender_name":"The\tSender"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender newline", in: `{"phone_number":"+12025550163","sender_name":"The\nSender"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender NUL", in: `{"phone_number":"+12025550163","sender_name":"A\u0000B"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender leading space", in: `{"phone_number":"+12025550163","sender_name":" Sender"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender trailing space", in: `{"phone_number":"+12025550163","sender_name":"Sender "}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender all spaces", in: `{"phone_number":"+12025550163","sender_name":"   "}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender one space", in: `{"phone_number":"+12025550163","sender_name":" "}`, wantCode: messages.CodeInvalidSenderName},
		{name: "sender punctuation only", in: `{"phone_number":"+12025550163","sender_name":"-._"}`, wantCode: messages.CodeInvalidSenderName},
		{name: "phone checked before sender", in: `{"phone_number":"12025550163","sender_name":"ABCDEFGHIJKL"}`, wantCode: messages.CodeInvalidPhoneNumber},

		// Correlation ID rules, and its echo on failures.
		{name: "correlation 128 chars", in: `{"phone_number":"+12025550163","correlation_id":"` + long("c", 128) + `"}`,
			want: messages.SendRequest{PhoneNumber: validPhone, CorrelationID: long("c", 128)}},
		{name: "correlation 128 non-ASCII chars", in: `{"phone_number":"+12025550163","correlation_id":"` + long("é", 128) + `"}`,
			want: messages.SendRequest{PhoneNumber: validPhone, CorrelationID: long("é", 128)}},
		{name: "correlation 129 chars", in: `{"phone_number":"+12025550163","correlation_id":"` + long("c", 129) + `"}`,
			want: messages.SendRequest{PhoneNumber: validPhone}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation newline", in: `{"phone_number":"+12025550163","correlation_id":"a\nb"}`,
			want: messages.SendRequest{PhoneNumber: validPhone}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation NUL", in: `{"phone_number":"+12025550163","correlation_id":"a\u0000b"}`,
			want: messages.SendRequest{PhoneNumber: validPhone}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation DEL", in: `{"phone_number":"+12025550163","correlation_id":"a\u007fb"}`,
			want: messages.SendRequest{PhoneNumber: validPhone}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation C1 control", in: `{"phone_number":"+12025550163","correlation_id":"a\u0085b"}`,
			want: messages.SendRequest{PhoneNumber: validPhone}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation spaces and unicode", in: `{"phone_number":"+12025550163","correlation_id":"sign up/42 ✓"}`,
			want: messages.SendRequest{PhoneNumber: validPhone, CorrelationID: "sign up/42 ✓"}},
		{name: "correlation echoed on bad phone", in: `{"phone_number":"12025550163","correlation_id":"signup-42"}`,
			want: messages.SendRequest{PhoneNumber: "12025550163", CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "correlation echoed on missing phone", in: `{"correlation_id":"signup-42"}`,
			want: messages.SendRequest{CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "correlation echoed on empty sender", in: `{"phone_number":"+12025550163","sender_name":"","correlation_id":"signup-42"}`,
			want: messages.SendRequest{PhoneNumber: validPhone, CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidSenderName},
		{name: "correlation echoed on bad sender", in: `{"phone_number":"+12025550163","sender_name":"Sender!","correlation_id":"signup-42"}`,
			want: messages.SendRequest{PhoneNumber: validPhone, SenderName: "Sender!", CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidSenderName},
		{name: "correlation echoed on wrong phone type", in: `{"phone_number":12025550163,"correlation_id":"signup-42"}`,
			want: messages.SendRequest{CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation echoed on wrong sender type, before it", in: `{"correlation_id":"signup-42","phone_number":"+12025550163","sender_name":7}`,
			want: messages.SendRequest{CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidRequest},
		{name: "too long correlation not echoed on wrong phone type", in: `{"phone_number":1,"correlation_id":"` + long("c", 129) + `"}`,
			wantCode: messages.CodeInvalidRequest},
		{name: "correlation checked before phone", in: `{"phone_number":"bad","correlation_id":"a\nb"}`,
			want: messages.SendRequest{PhoneNumber: "bad"}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation not echoed from invalid JSON", in: `{"phone_number":"+12025550163","correlation_id":"signup-42"`,
			wantCode: messages.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeSendRequest([]byte(tt.in))
			call := "DecodeSendRequest(" + quoteShort(tt.in) + ")"
			checkDecodeError(t, call, err, tt.wantCode)
			checkDecoded(t, call, err, tt.want, got, tt.want.CorrelationID, got.CorrelationID)
		})
	}
}

func TestDecodeVerifyRequest(t *testing.T) {
	long := func(r string, n int) string { return strings.Repeat(r, n) }
	verifyJSON := func(requestID, code string) string {
		return `{"request_id":"` + requestID + `","received_code":"` + code + `"}`
	}
	tests := []struct {
		name     string
		in       string
		want     messages.VerifyRequest
		wantCode messages.Code
	}{
		{name: "design example", in: `{"request_id": "3d50e1584e0946e789e0185c009aaadf", "received_code": "1234", "correlation_id": "signup-42"}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234", CorrelationID: "signup-42"}},
		{name: "unknown fields ignored", in: `{"request_id":"` + validRequestID + `","received_code":"1234","phone_number":12,"x":[{}]}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234"}},

		// Envelope.
		{name: "exactly 4096 bytes", in: `{"request_id":"` + validRequestID + `","received_code":"1234","p":"` +
			long("x", messages.MaxMessageSize-len(`{"request_id":"`+validRequestID+`","received_code":"1234","p":""}`)) + `"}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234"}},
		{name: "4097 bytes", in: `{"request_id":"` + validRequestID + `","received_code":"1234","p":"` +
			long("x", messages.MaxMessageSize+1-len(`{"request_id":"`+validRequestID+`","received_code":"1234","p":""}`)) + `"}`,
			wantCode: messages.CodeInvalidRequest},
		{name: "empty", in: ``, wantCode: messages.CodeInvalidRequest},
		{name: "not JSON", in: `request_id=1`, wantCode: messages.CodeInvalidRequest},
		{name: "truncated", in: `{"request_id":"` + validRequestID, wantCode: messages.CodeInvalidRequest},
		{name: "array", in: `[]`, wantCode: messages.CodeInvalidRequest},
		{name: "string", in: `"1234"`, wantCode: messages.CodeInvalidRequest},
		{name: "null", in: `null`, wantCode: messages.CodeInvalidRequest},
		{name: "number", in: `1234`, wantCode: messages.CodeInvalidRequest},
		{name: "trailing garbage", in: verifyJSON(validRequestID, "1234") + `x`, wantCode: messages.CodeInvalidRequest},
		{name: "request_id number", in: `{"request_id":123,"received_code":"1234"}`, wantCode: messages.CodeInvalidRequest},
		{name: "request_id array", in: `{"request_id":["` + validRequestID + `"],"received_code":"1234"}`, wantCode: messages.CodeInvalidRequest},
		{name: "received_code number", in: `{"request_id":"` + validRequestID + `","received_code":1234}`, wantCode: messages.CodeInvalidRequest},
		{name: "received_code bool", in: `{"request_id":"` + validRequestID + `","received_code":true}`, wantCode: messages.CodeInvalidRequest},
		{name: "correlation_id bool", in: `{"request_id":"` + validRequestID + `","received_code":"1234","correlation_id":true}`, wantCode: messages.CodeInvalidRequest},

		// Request ID rules.
		{name: "request_id missing", in: `{"received_code":"1234"}`, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id null", in: `{"request_id":null,"received_code":"1234"}`, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id empty", in: verifyJSON("", "1234"), want: messages.VerifyRequest{ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id 31", in: verifyJSON(long("a", 31), "1234"), want: messages.VerifyRequest{RequestID: long("a", 31), ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id 32", in: verifyJSON(long("a", 32), "1234"), want: messages.VerifyRequest{RequestID: long("a", 32), ReceivedCode: "1234"}},
		{name: "request_id 40", in: verifyJSON(long("a", 40), "1234"), want: messages.VerifyRequest{RequestID: long("a", 40), ReceivedCode: "1234"}},
		{name: "request_id 41", in: verifyJSON(long("a", 41), "1234"), want: messages.VerifyRequest{RequestID: long("a", 41), ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id uuid with dashes", in: verifyJSON("3d50e158-4e09-46e7-89e0-185c009aaadf", "1234"),
			want: messages.VerifyRequest{RequestID: "3d50e158-4e09-46e7-89e0-185c009aaadf", ReceivedCode: "1234"}},
		{name: "request_id inner space", in: verifyJSON(long("a", 16)+" "+long("a", 16), "1234"),
			want: messages.VerifyRequest{RequestID: long("a", 16) + " " + long("a", 16), ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id trailing space", in: verifyJSON(validRequestID+" ", "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + " ", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id tab", in: verifyJSON(validRequestID+`\t`, "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + "\t", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id newline", in: verifyJSON(validRequestID+`\n`, "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + "\n", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id NUL", in: verifyJSON(validRequestID+`\u0000`, "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + "\x00", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id DEL", in: verifyJSON(validRequestID+`\u007f`, "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + "\x7f", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id no-break space", in: verifyJSON(validRequestID+"\u00a0", "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + "\u00a0", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id ideographic space", in: verifyJSON(validRequestID+"\u3000", "1234"),
			want: messages.VerifyRequest{RequestID: validRequestID + "\u3000", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		// The contract forbids only whitespace and control characters, and
		// counts characters, not bytes.
		{name: "request_id 32 non-ASCII characters", in: verifyJSON(long("é", 32), "1234"),
			want: messages.VerifyRequest{RequestID: long("é", 32), ReceivedCode: "1234"}},
		{name: "request_id 40 non-ASCII characters", in: verifyJSON(long("é", 40), "1234"),
			want: messages.VerifyRequest{RequestID: long("é", 40), ReceivedCode: "1234"}},
		{name: "request_id 41 non-ASCII characters", in: verifyJSON(long("é", 41), "1234"),
			want: messages.VerifyRequest{RequestID: long("é", 41), ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id 31 characters in 62 bytes", in: verifyJSON(long("é", 31), "1234"),
			want: messages.VerifyRequest{RequestID: long("é", 31), ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "request_id checked before code", in: verifyJSON(long("a", 31), "12"),
			want: messages.VerifyRequest{RequestID: long("a", 31), ReceivedCode: "12"}, wantCode: messages.CodeInvalidRequestID},

		// Code rules.
		{name: "code missing", in: `{"request_id":"` + validRequestID + `"}`, want: messages.VerifyRequest{RequestID: validRequestID}, wantCode: messages.CodeInvalidCode},
		{name: "code empty", in: verifyJSON(validRequestID, ""), want: messages.VerifyRequest{RequestID: validRequestID}, wantCode: messages.CodeInvalidCode},
		{name: "code 3 digits", in: verifyJSON(validRequestID, "123"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "123"}, wantCode: messages.CodeInvalidCode},
		{name: "code 4 digits", in: verifyJSON(validRequestID, "1234"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234"}},
		{name: "code 0000", in: verifyJSON(validRequestID, "0000"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "0000"}},
		{name: "code 5 digits", in: verifyJSON(validRequestID, "12345"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "12345"}, wantCode: messages.CodeInvalidCode},
		{name: "code letter", in: verifyJSON(validRequestID, "12a4"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "12a4"}, wantCode: messages.CodeInvalidCode},
		{name: "code sign", in: verifyJSON(validRequestID, "-123"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "-123"}, wantCode: messages.CodeInvalidCode},
		{name: "code arabic-indic digits", in: verifyJSON(validRequestID, "١٢٣٤"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "١٢٣٤"}, wantCode: messages.CodeInvalidCode},
		{name: "code fullwidth digits", in: verifyJSON(validRequestID, "１２３４"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "１２３４"}, wantCode: messages.CodeInvalidCode},
		{name: "code leading space", in: verifyJSON(validRequestID, " 1234"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: " 1234"}, wantCode: messages.CodeInvalidCode},
		{name: "code trailing space", in: verifyJSON(validRequestID, "1234 "), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234 "}, wantCode: messages.CodeInvalidCode},
		{name: "code inner space", in: verifyJSON(validRequestID, "12 4"), want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "12 4"}, wantCode: messages.CodeInvalidCode},

		// Correlation ID rules.
		{name: "correlation 128 chars", in: `{"request_id":"` + validRequestID + `","received_code":"1234","correlation_id":"` + long("c", 128) + `"}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234", CorrelationID: long("c", 128)}},
		{name: "correlation 129 chars", in: `{"request_id":"` + validRequestID + `","received_code":"1234","correlation_id":"` + long("c", 129) + `"}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation control char", in: `{"request_id":"` + validRequestID + `","received_code":"1234","correlation_id":"x\ty"}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequest},
		{name: "correlation echoed on bad code", in: `{"request_id":"` + validRequestID + `","received_code":"12","correlation_id":"signup-42"}`,
			want: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "12", CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidCode},
		{name: "correlation echoed on bad request_id", in: `{"request_id":"short","received_code":"1234","correlation_id":"signup-42"}`,
			want: messages.VerifyRequest{RequestID: "short", ReceivedCode: "1234", CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidRequestID},
		{name: "correlation echoed on wrong code type", in: `{"request_id":"` + validRequestID + `","received_code":1234,"correlation_id":"signup-42"}`,
			want: messages.VerifyRequest{CorrelationID: "signup-42"}, wantCode: messages.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messages.DecodeVerifyRequest([]byte(tt.in))
			call := "DecodeVerifyRequest(" + quoteShort(tt.in) + ")"
			checkDecodeError(t, call, err, tt.wantCode)
			checkDecoded(t, call, err, tt.want, got, tt.want.CorrelationID, got.CorrelationID)
		})
	}
}

// checkDecoded compares the whole request when it was accepted, and only
// the echoed correlation ID when it was refused: a refusal promises nothing
// else about the fields.
func checkDecoded[R any](t *testing.T, call string, err error, want, got R, wantCorrelation, gotCorrelation string) {
	t.Helper()
	if err != nil {
		if gotCorrelation != wantCorrelation {
			t.Errorf("%s correlation_id = %q, want %q echoed", call, gotCorrelation, wantCorrelation)
		}
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s request mismatch (-want +got):\n%s", call, diff)
	}
}

// quoteShort quotes s for a failure message, shortening the padded
// payloads of the size tests.
func quoteShort(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%q...(%d bytes)", s[:100], len(s))
	}
	return strconv.Quote(s)
}

func TestSendRequestValidate(t *testing.T) {
	tests := []struct {
		name     string
		req      messages.SendRequest
		wantCode messages.Code
	}{
		{name: "phone only", req: messages.SendRequest{PhoneNumber: validPhone}},
		{name: "empty sender means absent", req: messages.SendRequest{PhoneNumber: validPhone, SenderName: ""}},
		{name: "all fields", req: messages.SendRequest{PhoneNumber: validPhone, SenderName: "The Sender", CorrelationID: "c"}},
		{name: "zero value", req: messages.SendRequest{}, wantCode: messages.CodeInvalidPhoneNumber},
		{name: "bad sender", req: messages.SendRequest{PhoneNumber: validPhone, SenderName: " x"}, wantCode: messages.CodeInvalidSenderName},
		{name: "long correlation", req: messages.SendRequest{PhoneNumber: validPhone, CorrelationID: strings.Repeat("c", 129)}, wantCode: messages.CodeInvalidRequest},
		{name: "invalid UTF-8 correlation", req: messages.SendRequest{PhoneNumber: validPhone, CorrelationID: "a\xffb"}, wantCode: messages.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "SendRequest("+strconv.Quote(tt.req.PhoneNumber)+").Validate()", tt.req.Validate(), tt.wantCode)
		})
	}
}

func TestVerifyRequestValidate(t *testing.T) {
	tests := []struct {
		name     string
		req      messages.VerifyRequest
		wantCode messages.Code
	}{
		{name: "valid", req: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234"}},
		{name: "zero value", req: messages.VerifyRequest{}, wantCode: messages.CodeInvalidRequestID},
		{name: "invalid UTF-8 request_id", req: messages.VerifyRequest{RequestID: strings.Repeat("a", 31) + "\xff", ReceivedCode: "1234"}, wantCode: messages.CodeInvalidRequestID},
		{name: "bad code", req: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "12345"}, wantCode: messages.CodeInvalidCode},
		{name: "control in correlation", req: messages.VerifyRequest{RequestID: validRequestID, ReceivedCode: "1234", CorrelationID: "\x1b[31m"}, wantCode: messages.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "VerifyRequest("+strconv.Quote(tt.req.RequestID)+").Validate()", tt.req.Validate(), tt.wantCode)
		})
	}
}

// Results never carry a full phone number or a code: the messages of
// decoding errors must not quote the input they refuse.
func TestDecodeErrorsDoNotEchoInput(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		decode   func([]byte) error
		wantCode messages.Code
		secrets  []string
	}{
		{name: "phone without plus", in: `{"phone_number":"37060012345"}`, decode: decodeSend,
			wantCode: messages.CodeInvalidPhoneNumber, secrets: []string{"37060012345", "60012345"}},
		{name: "phone with spaces", in: `{"phone_number":"+370 600 12345"}`, decode: decodeSend,
			wantCode: messages.CodeInvalidPhoneNumber, secrets: []string{"+370 600 12345", "12345"}},
		{name: "phone too long", in: `{"phone_number":"+3706001234567890"}`, decode: decodeSend,
			wantCode: messages.CodeInvalidPhoneNumber, secrets: []string{"3706001234567890"}},
		{name: "phone with bad sender", in: `{"phone_number":"+37060012345","sender_name":"Shop 12345678"}`, decode: decodeSend,
			wantCode: messages.CodeInvalidSenderName, secrets: []string{"37060012345", "12345678"}},
		{name: "code too long", in: `{"request_id":"` + validRequestID + `","received_code":"98765"}`, decode: decodeVerify,
			wantCode: messages.CodeInvalidCode, secrets: []string{"98765"}},
		{name: "code with letter", in: `{"request_id":"` + validRequestID + `","received_code":"987x"}`, decode: decodeVerify,
			wantCode: messages.CodeInvalidCode, secrets: []string{"987x"}},
		{name: "code with short request_id", in: `{"request_id":"abc","received_code":"9876"}`, decode: decodeVerify,
			wantCode: messages.CodeInvalidRequestID, secrets: []string{"9876"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDecodeError(t, "decode("+strconv.Quote(tt.in)+")", tt.decode([]byte(tt.in)), tt.wantCode, tt.secrets...)
		})
	}
}

func decodeSend(data []byte) error {
	_, err := messages.DecodeSendRequest(data)
	return err
}

func decodeVerify(data []byte) error {
	_, err := messages.DecodeVerifyRequest(data)
	return err
}

// One field given twice is refused, however it is spelled: encoding/json
// alone would keep the last value, and a service that reads the first (or
// the exact name) would see another number than the one texted.
func TestDecodeRefusesAFieldGivenTwice(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"repeated", `{"phone_number":"+12025550163","phone_number":"+447700900123"}`},
		{"case variant", `{"phone_number":"+12025550163","Phone_Number":"+447700900123"}`},
		{"case variant alone", `{"PHONE_NUMBER":"+12025550163"}`},
		{"escaped repeat", `{"phone_number":"+12025550163","phone\u005fnumber":"+447700900123"}`},
		{"repeated optional field", `{"phone_number":"+12025550163","sender_name":"A","sender_name":"B"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := messages.DecodeSendRequest([]byte(tt.data))
			var e *messages.Error
			if !errors.As(err, &e) || e.Code != messages.CodeInvalidRequest {
				t.Errorf("DecodeSendRequest(%s) = %v, want invalid_request", tt.data, err)
			}
		})
	}
	verify := `{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"1234","Received_Code":"9999"}`
	if _, err := messages.DecodeVerifyRequest([]byte(verify)); err == nil {
		t.Errorf("DecodeVerifyRequest(%s) = nil error, want invalid_request", verify)
	}
	// Unknown fields are still ignored, whatever their case or count.
	ok := `{"phone_number":"+12025550163","Extra":1,"extra":2}`
	if _, err := messages.DecodeSendRequest([]byte(ok)); err != nil {
		t.Errorf("DecodeSendRequest(%s) = %v, want nil", ok, err)
	}
}
