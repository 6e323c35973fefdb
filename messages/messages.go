// Package messages is the wire contract of idenfy-worker: the NATS subjects,
// the request and result types, their validation and the stable error codes.
//
// Services that ask for phone verification import this package to build
// requests and read results; the worker uses it to decode and answer them.
// It has no dependency on NATS or on the iDenfy HTTP API.
package messages

// Limits and names fixed by the contract.
const (
	// MaxMessageSize is the largest request payload accepted, in bytes.
	MaxMessageSize = 4096

	// MaxCorrelationIDLength is the longest correlation_id accepted, in characters.
	MaxCorrelationIDLength = 128

	// MaxSenderNameLength is the longest sender_name the vendor can show.
	MaxSenderNameLength = 11

	// MinRequestIDLength and MaxRequestIDLength bound a vendor request_id.
	MinRequestIDLength = 32
	MaxRequestIDLength = 40

	// ServiceName is the NATS micro service name of the request/reply intake.
	ServiceName = "idenfy-phone"

	// QueueGroup is the queue group shared by every worker's endpoints.
	QueueGroup = "idenfy-workers"

	// HeaderMsgID carries the idempotency key on both intakes.
	HeaderMsgID = "Nats-Msg-Id"

	// HeaderReplyTo names a subject a job's result is also published to.
	HeaderReplyTo = "Reply-To"
)

// Status is the outcome of a request, as carried in a result's "status".
type Status string

// The statuses of the contract.
const (
	StatusSent     Status = "sent"     // send: iDenfy accepted the SMS
	StatusVerified Status = "verified" // verify: the code was right
	StatusRejected Status = "rejected" // verify: iDenfy answered is_verified false
	StatusFailed   Status = "failed"   // either: see the result's error
)

// SendRequest asks for a verification code to be sent to a phone number.
type SendRequest struct {
	// PhoneNumber in E.164 form, e.g. "+12025550163". Required.
	PhoneNumber string `json:"phone_number"`
	// SenderName shown to the user, at most 11 characters. Optional: the
	// vendor shows "iDenfy" when it is absent.
	SenderName string `json:"sender_name,omitempty"`
	// CorrelationID is echoed on the result. Optional, at most 128 characters.
	CorrelationID string `json:"correlation_id,omitempty"`
}

// VerifyRequest asks whether the code a user typed is the one sent to them.
type VerifyRequest struct {
	// RequestID is the request_id of the SendResult. Required.
	RequestID string `json:"request_id"`
	// ReceivedCode is what the user typed: exactly 4 digits. Required.
	ReceivedCode string `json:"received_code"`
	// CorrelationID is echoed on the result. Optional, at most 128 characters.
	CorrelationID string `json:"correlation_id,omitempty"`
}

// SendResult answers a SendRequest.
type SendResult struct {
	Status        Status `json:"status"`
	RequestID     string `json:"request_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Attempts is the number of calls made to iDenfy for this request,
	// retries included; 0 when the answer came without calling it.
	Attempts int `json:"attempts"`
	// PossibleDuplicate is set when an attempt may have reached iDenfy
	// without its answer being read: the user may have received an SMS (or a
	// second one) that this result does not account for. It is set on sent
	// and on failed results alike.
	PossibleDuplicate bool   `json:"possible_duplicate,omitempty"`
	Error             *Error `json:"error,omitempty"`
}

// VerifyResult answers a VerifyRequest.
type VerifyResult struct {
	Status        Status `json:"status"`
	IsVerified    bool   `json:"is_verified"`
	RequestID     string `json:"request_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Attempts is the number of calls made to iDenfy for this request,
	// retries included; 0 when the answer came without calling it.
	Attempts int    `json:"attempts"`
	Error    *Error `json:"error,omitempty"`
}

// Error explains a failed result.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Retryable says whether asking again may help.
	Retryable bool `json:"retryable"`
	// RetryAfter, in whole seconds, says when asking again makes sense, like
	// HTTP's Retry-After: set for rate_limited, too_many_sends, and
	// upstream_unavailable while the circuit breaker is open; 0 when unknown.
	RetryAfter int `json:"retry_after,omitempty"`
}

// NewError returns an Error with the code's usual retryability.
func NewError(code Code, message string) *Error {
	return &Error{Code: code, Message: message, Retryable: code.Retryable()}
}

// Error makes *Error usable as a Go error; it reads "code: message".
func (e *Error) Error() string {
	return string(e.Code) + ": " + e.Message
}

// FailedSend returns the failed SendResult carrying e.
func FailedSend(correlationID string, attempts int, e *Error) SendResult {
	return SendResult{Status: StatusFailed, CorrelationID: correlationID, Attempts: attempts, Error: e}
}

// FailedVerify returns the failed VerifyResult carrying e.
func FailedVerify(requestID, correlationID string, attempts int, e *Error) VerifyResult {
	return VerifyResult{Status: StatusFailed, RequestID: requestID, CorrelationID: correlationID, Attempts: attempts, Error: e}
}
