package messages

// Code is a stable error code of the contract. Callers switch on it; it never
// changes meaning.
type Code string

// The error codes of the contract.
const (
	// CodeInvalidRequest: not JSON, not an object, over the size limit, wrong
	// field types, or a correlation_id that is too long or not printable.
	CodeInvalidRequest Code = "invalid_request"
	// CodeInvalidPhoneNumber: missing or not E.164.
	CodeInvalidPhoneNumber Code = "invalid_phone_number"
	// CodeInvalidSenderName: empty, over 11 characters, or characters the
	// vendor cannot show.
	CodeInvalidSenderName Code = "invalid_sender_name"
	// CodeInvalidRequestID: missing, shorter than 32 or longer than 40, or
	// containing whitespace or control characters.
	CodeInvalidRequestID Code = "invalid_request_id"
	// CodeInvalidCode: not exactly 4 ASCII digits.
	CodeInvalidCode Code = "invalid_code"
	// CodeUnauthorized: iDenfy answered 401 or 403.
	CodeUnauthorized Code = "unauthorized"
	// CodeQuotaExhausted: iDenfy answered 402, or 400 with PERMISSIONS_ERROR.
	CodeQuotaExhausted Code = "quota_exhausted"
	// CodeUpstreamRejected: iDenfy answered another 4xx.
	CodeUpstreamRejected Code = "upstream_rejected"
	// CodeRateLimited: iDenfy kept answering 429 past the retry budget.
	CodeRateLimited Code = "rate_limited"
	// CodeUpstreamUnavailable: network errors or 5xx past the retry budget.
	CodeUpstreamUnavailable Code = "upstream_unavailable"
	// CodeOutcomeUnknown: an earlier attempt may have been processed
	// upstream, so the final answer cannot be trusted.
	CodeOutcomeUnknown Code = "outcome_unknown"
	// CodeExpired: a job waited longer than the job max age.
	CodeExpired Code = "expired"
	// CodeCountryNotAllowed: the number's country is outside the allow-list.
	CodeCountryNotAllowed Code = "country_not_allowed"
	// CodeTooManySends: the number passed its send limit.
	CodeTooManySends Code = "too_many_sends"
	// CodeNumberNotAllowed: the number's type (premium rate, shared cost...)
	// is blocked by the deployment.
	CodeNumberNotAllowed Code = "number_not_allowed"
	// CodeSuspectedFraud: the number's range is paused by the pumping guard:
	// many sends to it, few of them verified.
	CodeSuspectedFraud Code = "suspected_fraud"
	// CodeShuttingDown: the worker stopped before it could answer.
	CodeShuttingDown Code = "shutting_down"
)

// Codes lists every error code of the contract.
var Codes = []Code{
	CodeInvalidRequest, CodeInvalidPhoneNumber, CodeInvalidSenderName,
	CodeInvalidRequestID, CodeInvalidCode, CodeUnauthorized,
	CodeQuotaExhausted, CodeUpstreamRejected, CodeRateLimited,
	CodeUpstreamUnavailable, CodeOutcomeUnknown, CodeExpired,
	CodeCountryNotAllowed, CodeTooManySends, CodeNumberNotAllowed,
	CodeSuspectedFraud, CodeShuttingDown,
}

// Retryable reports whether asking again (later, with the same input) may
// give a different answer. It is the default of an Error's Retryable field.
//
// outcome_unknown defaults to false, which is right for a verify: iDenfy
// refuses a code it already accepted, so asking again cannot tell. The worker
// marks a send's outcome_unknown retryable instead: a new send is the way
// forward, even though it texts the user again.
func (c Code) Retryable() bool {
	switch c {
	case CodeRateLimited, CodeUpstreamUnavailable, CodeExpired,
		CodeTooManySends, CodeShuttingDown:
		return true
	}
	return false
}

// IsInvalidInput reports whether c rejects the caller's input. Such requests
// never reach iDenfy and are never retried.
func (c Code) IsInvalidInput() bool {
	switch c {
	case CodeInvalidRequest, CodeInvalidPhoneNumber, CodeInvalidSenderName,
		CodeInvalidRequestID, CodeInvalidCode:
		return true
	}
	return false
}
