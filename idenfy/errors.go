package idenfy

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

var (
	// ErrInvalidConfig is returned by NewClient for a missing or malformed
	// setting.
	ErrInvalidConfig = errors.New("idenfy: invalid configuration")

	// ErrInsecureBaseURL is returned by NewClient for a plain http:// base
	// URL whose host is not a loopback address.
	ErrInsecureBaseURL = errors.New("idenfy: base URL must use https unless its host is loopback")

	// ErrInvalidResponse matches a response that is not the documented
	// JSON: an HTML page, an empty or truncated body, missing fields, wrong
	// types, or a body over the size limit.
	ErrInvalidResponse = errors.New("idenfy: invalid response")

	// ErrUnauthorized matches an *APIError for 401 (bad credentials) or 403
	// (partner inactive or wrong environment).
	ErrUnauthorized = errors.New("idenfy: unauthorized")

	// ErrQuotaExhausted matches an *APIError for 402 (lack of funds) or 400
	// with identifier PERMISSIONS_ERROR (credits used up).
	ErrQuotaExhausted = errors.New("idenfy: quota exhausted")

	// ErrRateLimited matches an *APIError for 429, or for any status with
	// identifier TOO_MANY_REQUESTS.
	ErrRateLimited = errors.New("idenfy: rate limited")

	// ErrServerError matches an *APIError for any 5xx status.
	ErrServerError = errors.New("idenfy: server error")
)

// Vendor error identifiers that change how an answer is classified.
const (
	IdentifierPermissions     = "PERMISSIONS_ERROR"
	IdentifierTooManyRequests = "TOO_MANY_REQUESTS"
)

// APIError is a non-2xx answer from iDenfy.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Identifier is the vendor's error identifier (BAD_VALUE, ...); empty for
	// authentication errors, which come without one.
	Identifier string
	// Message is the vendor's message, with digit runs masked and its length
	// bounded, so that it can be logged and passed on.
	Message string
	// RetryAfter is the parsed Retry-After header, zero when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("idenfy: HTTP %d", e.Status)
	if e.Identifier != "" {
		s += " " + e.Identifier
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is matches the sentinel errors of this package by status and identifier,
// so that callers write errors.Is(err, idenfy.ErrRateLimited).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrQuotaExhausted:
		return e.Status == http.StatusPaymentRequired ||
			(e.Status == http.StatusBadRequest && e.Identifier == IdentifierPermissions)
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests || e.Identifier == IdentifierTooManyRequests
	case ErrServerError:
		return e.Status >= 500 && e.Status <= 599
	}
	return false
}

// TransportError is an attempt that failed before a complete answer was
// read: a dial failure, a timeout, a reset connection, a cancelled context.
type TransportError struct {
	// Op is "send-sms" or "verify-sms".
	Op string
	// Written is true when the whole request was written to the connection,
	// so iDenfy may have processed it even though no answer was read.
	Written bool
	Err     error
}

func (e *TransportError) Error() string {
	when := "before the request was written"
	if e.Written {
		when = "after the request was written"
	}
	return fmt.Sprintf("idenfy: %s failed %s: %v", e.Op, when, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Timeout reports whether the attempt ran out of time.
func (e *TransportError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.Is(e.Err, errTimeout) || (errors.As(e.Err, &t) && t.Timeout())
}

// errTimeout marks the client's own per-attempt timeout.
var errTimeout = errors.New("attempt timed out")

// ResponseError is a 2xx answer whose body is not the documented JSON.
// iDenfy received and most likely processed the call.
type ResponseError struct {
	Status int
	Reason string
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("idenfy: invalid response (HTTP %d): %s", e.Status, e.Reason)
}

// Is matches ErrInvalidResponse.
func (e *ResponseError) Is(target error) bool { return target == ErrInvalidResponse }

// Ambiguous reports whether err comes from an attempt that iDenfy may have
// processed although its answer was not read: a timeout or reset after the
// request was written, a 500, 502 or 504, or a 2xx with an unreadable body.
// An ambiguous send may have texted the user; an ambiguous verify may have
// consumed the code. 429, 503 and failures before the request was written
// are not ambiguous.
func Ambiguous(err error) bool {
	var te *TransportError
	if errors.As(err, &te) {
		return te.Written
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var re *ResponseError
	return errors.As(err, &re)
}
