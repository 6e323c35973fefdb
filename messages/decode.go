package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The wire forms tell an absent optional field from an empty one: an absent
// sender_name means the vendor default, an empty one is a mistake.
type sendWire struct {
	PhoneNumber   *string `json:"phone_number"`
	SenderName    *string `json:"sender_name"`
	CorrelationID *string `json:"correlation_id"`
}

type verifyWire struct {
	RequestID     *string `json:"request_id"`
	ReceivedCode  *string `json:"received_code"`
	CorrelationID *string `json:"correlation_id"`
}

// DecodeSendRequest decodes and validates a SendRequest payload. The error,
// when not nil, is an *Error with the contract code for the first problem
// found. The returned request carries what could be decoded (at least a valid
// correlation_id), so that a failure can still be correlated.
func DecodeSendRequest(data []byte) (SendRequest, error) {
	var w sendWire
	if err := decodeObject(data, &w, sendFields...); err != nil {
		return SendRequest{CorrelationID: echoable(w.CorrelationID)}, err
	}
	req := SendRequest{
		PhoneNumber:   deref(w.PhoneNumber),
		SenderName:    deref(w.SenderName),
		CorrelationID: deref(w.CorrelationID),
	}
	if err := validateCorrelationID(req.CorrelationID); err != nil {
		req.CorrelationID = ""
		return req, err
	}
	if w.SenderName != nil && *w.SenderName == "" {
		return req, NewError(CodeInvalidSenderName, "sender_name is empty: leave it out to use the vendor default")
	}
	return req, req.Validate()
}

// DecodeVerifyRequest decodes and validates a VerifyRequest payload, like
// DecodeSendRequest.
func DecodeVerifyRequest(data []byte) (VerifyRequest, error) {
	var w verifyWire
	if err := decodeObject(data, &w, verifyFields...); err != nil {
		return VerifyRequest{CorrelationID: echoable(w.CorrelationID)}, err
	}
	req := VerifyRequest{
		RequestID:     deref(w.RequestID),
		ReceivedCode:  deref(w.ReceivedCode),
		CorrelationID: deref(w.CorrelationID),
	}
	if err := validateCorrelationID(req.CorrelationID); err != nil {
		req.CorrelationID = ""
		return req, err
	}
	return req, req.Validate()
}

// Validate reports the first rule of the contract that r breaks, as an
// *Error, or nil. An empty SenderName means "absent" here.
func (r SendRequest) Validate() error {
	if err := ValidatePhoneNumber(r.PhoneNumber); err != nil {
		return err
	}
	if r.SenderName != "" {
		if err := ValidateSenderName(r.SenderName); err != nil {
			return err
		}
	}
	return validateCorrelationID(r.CorrelationID)
}

// Validate reports the first rule of the contract that r breaks, as an
// *Error, or nil.
func (r VerifyRequest) Validate() error {
	if err := ValidateRequestID(r.RequestID); err != nil {
		return err
	}
	if err := ValidateCode(r.ReceivedCode); err != nil {
		return err
	}
	return validateCorrelationID(r.CorrelationID)
}

// The field names of each request, as the contract spells them.
var (
	sendFields   = []string{"phone_number", "sender_name", "correlation_id"}
	verifyFields = []string{"request_id", "received_code", "correlation_id"}
)

func decodeObject(data []byte, v any, fields ...string) error {
	if len(data) > MaxMessageSize {
		return NewError(CodeInvalidRequest, fmt.Sprintf("message is %d bytes, over the limit of %d", len(data), MaxMessageSize))
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return NewError(CodeInvalidRequest, "message is empty: send a JSON object")
	}
	if trimmed[0] != '{' {
		return NewError(CodeInvalidRequest, "message is not a JSON object")
	}
	if err := json.Unmarshal(data, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return NewError(CodeInvalidRequest, fmt.Sprintf("%s must be a %s, not a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value))
		}
		return NewError(CodeInvalidRequest, "message is not valid JSON")
	}
	return checkFieldNames(data, fields)
}

// checkFieldNames refuses the ways one field can be given twice, which
// encoding/json settles silently by taking the last: a repeated name, and a
// name that differs only in case ("Phone_Number"), since encoding/json
// matches names case-insensitively. A service that reads the first, or the
// exact name, would otherwise see another number than the worker texts.
//
// data is known to be a valid JSON object, so a scan of its top-level
// names is enough: no second decode.
func checkFieldNames(data []byte, fields []string) error {
	var seen [4]bool
	depth := 0
	expectName := false
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '"':
			end, escaped := stringEnd(data, i)
			if depth == 1 && expectName {
				if err := checkFieldName(data[i:end+1], escaped, fields, &seen); err != nil {
					return err
				}
				expectName = false
			}
			i = end
		case '{':
			depth++
			expectName = depth == 1
		case '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			expectName = depth == 1
		}
	}
	return nil
}

// stringEnd returns the index of the quote that closes the JSON string
// starting at data[start], and whether it holds escapes.
func stringEnd(data []byte, start int) (int, bool) {
	escaped := false
	for j := start + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j, escaped
		}
	}
	return len(data) - 1, escaped
}

func checkFieldName(quoted []byte, escaped bool, fields []string, seen *[4]bool) error {
	name := quoted[1 : len(quoted)-1]
	if escaped {
		var s string
		if json.Unmarshal(quoted, &s) != nil {
			return NewError(CodeInvalidRequest, "message is not valid JSON")
		}
		name = []byte(s)
	}
	for i, f := range fields {
		if len(name) > 4*len(f) || !bytes.EqualFold(name, []byte(f)) {
			continue
		}
		if string(name) != f {
			return NewError(CodeInvalidRequest, fmt.Sprintf("field names are case-sensitive: write %s", f))
		}
		if seen[i] {
			return NewError(CodeInvalidRequest, fmt.Sprintf("field %s appears more than once", f))
		}
		seen[i] = true
	}
	return nil
}

// echoable returns a decoded correlation_id when it is valid, so that a
// request refused for a wrong field type can still be correlated (json.Unmarshal
// fills the other fields before reporting a type error).
func echoable(s *string) string {
	if s == nil || validateCorrelationID(*s) != nil {
		return ""
	}
	return *s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ValidatePhoneNumber checks E.164 as the contract states it: "+", then 7 to
// 15 digits, the first not 0, nothing else.
func ValidatePhoneNumber(s string) error {
	if s == "" {
		return NewError(CodeInvalidPhoneNumber, "phone_number is required: '+', the country code, then the number, digits only")
	}
	if !isE164(s) {
		return NewError(CodeInvalidPhoneNumber, "phone_number must be E.164: '+', then 7 to 15 digits starting with the country code (not 0), no spaces or dashes")
	}
	return nil
}

func isE164(s string) bool {
	if len(s) < 8 || len(s) > 16 || s[0] != '+' || s[1] == '0' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidateSenderName checks a sender name that is present: 1 to 11
// characters of the set that alphanumeric SMS sender IDs can show (ASCII
// letters and digits, space, and - . _ & + '), not starting or ending with a
// space, with at least one letter or digit.
func ValidateSenderName(s string) error {
	if s == "" {
		return NewError(CodeInvalidSenderName, "sender_name is empty: leave it out to use the vendor default")
	}
	if n := utf8.RuneCountInString(s); n > MaxSenderNameLength {
		return NewError(CodeInvalidSenderName, fmt.Sprintf("sender_name is %d characters, over the limit of %d", n, MaxSenderNameLength))
	}
	alnum := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			alnum = true
		case c == ' ' || c == '-' || c == '.' || c == '_' || c == '&' || c == '+' || c == '\'':
		default:
			return NewError(CodeInvalidSenderName, "sender_name may hold only ASCII letters, digits, spaces and - . _ & + '")
		}
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return NewError(CodeInvalidSenderName, "sender_name may not start or end with a space")
	}
	if !alnum {
		return NewError(CodeInvalidSenderName, "sender_name needs at least one letter or digit")
	}
	return nil
}

// ValidateRequestID checks a vendor request_id: 32 to 40 characters of
// valid UTF-8 without whitespace or control characters.
func ValidateRequestID(s string) error {
	if s == "" {
		return NewError(CodeInvalidRequestID, "request_id is required: use the request_id of the send result")
	}
	if !utf8.ValidString(s) {
		return NewError(CodeInvalidRequestID, "request_id is not valid UTF-8")
	}
	n := utf8.RuneCountInString(s)
	if n < MinRequestIDLength || n > MaxRequestIDLength {
		return NewError(CodeInvalidRequestID, fmt.Sprintf("request_id is %d characters; it must be %d to %d", n, MinRequestIDLength, MaxRequestIDLength))
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return NewError(CodeInvalidRequestID, "request_id may not contain whitespace or control characters")
		}
	}
	return nil
}

// ValidateCode checks a received code: exactly 4 ASCII digits.
func ValidateCode(s string) error {
	if len(s) != 4 {
		return NewError(CodeInvalidCode, "received_code must be exactly 4 digits")
	}
	for i := 0; i < 4; i++ {
		if s[i] < '0' || s[i] > '9' {
			return NewError(CodeInvalidCode, "received_code must be exactly 4 digits")
		}
	}
	return nil
}

func validateCorrelationID(s string) error {
	if s == "" {
		return nil
	}
	if !utf8.ValidString(s) {
		return NewError(CodeInvalidRequest, "correlation_id is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > MaxCorrelationIDLength {
		return NewError(CodeInvalidRequest, fmt.Sprintf("correlation_id is %d characters, over the limit of %d", n, MaxCorrelationIDLength))
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return NewError(CodeInvalidRequest, "correlation_id may not contain control characters")
		}
	}
	return nil
}
