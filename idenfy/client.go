// Package idenfy is an HTTP client for iDenfy's phone verification API: send
// a code by SMS, then verify the code the user typed.
//
// The client makes exactly one HTTP attempt per call and never retries:
// retry policy belongs to the caller, which needs the typed errors of this
// package to decide. errors.Is with ErrUnauthorized, ErrQuotaExhausted,
// ErrRateLimited, ErrServerError and ErrInvalidResponse classifies an answer;
// Ambiguous tells whether a failed attempt may still have been processed.
package idenfy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// Defaults of the vendor API.
const (
	DefaultBaseURL = "https://ivs.idenfy.com"
	DefaultTimeout = 10 * time.Second

	// MaxResponseSize bounds how much of an answer is read.
	MaxResponseSize = 64 << 10

	// maxMessageLength bounds a vendor message kept in an APIError.
	maxMessageLength = 256
)

// Paths of the vendor API, relative to the base URL.
const (
	PathSendSMS   = "/fraud/send-sms"
	PathVerifySMS = "/fraud/verify-sms"
)

// Config holds the required settings of a Client.
type Config struct {
	// BaseURL of the API; DefaultBaseURL when empty. Plain http:// is
	// accepted only for loopback hosts (a simulator).
	BaseURL string
	// APIKey and APISecret are the HTTP basic auth username and password.
	APIKey    string
	APISecret string
}

func (c Config) valid() (*url.URL, error) {
	if c.APIKey == "" {
		return nil, fmt.Errorf("%w: API key is empty", ErrInvalidConfig)
	}
	if c.APISecret == "" {
		return nil, fmt.Errorf("%w: API secret is empty", ErrInvalidConfig)
	}
	raw := c.BaseURL
	if raw == "" {
		raw = DefaultBaseURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		// Not quoted: a malformed URL may still hold credentials.
		return nil, fmt.Errorf("%w: base URL is not an absolute URL such as %s", ErrInvalidConfig, DefaultBaseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%w: base URL may not carry credentials, a query or a fragment", ErrInvalidConfig)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%w: %q", ErrInsecureBaseURL, u.Redacted())
		}
	default:
		return nil, fmt.Errorf("%w: base URL scheme %q is not https", ErrInvalidConfig, u.Scheme)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Option configures a Client beyond its Config.
type Option func(*Client) error

// WithHTTPClient makes the Client send its requests through hc. The client's
// own Timeout should be zero or longer than the per-attempt timeout, and it
// should not follow redirects (the API has none; a redirected POST would be
// replayed as a GET).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return fmt.Errorf("%w: nil HTTP client", ErrInvalidConfig)
		}
		c.http = hc
		return nil
	}
}

// WithTimeout bounds one HTTP attempt, from dial to the last byte of the
// answer. The default is DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout %v is not positive", ErrInvalidConfig, d)
		}
		c.timeout = d
		return nil
	}
}

// WithMaxConnections sizes the default transport's connection pool to n,
// which should match the number of calls the caller keeps in flight: a pool
// smaller than that closes and redials connections under load. It has no
// effect together with WithHTTPClient.
func WithMaxConnections(n int) Option {
	return func(c *Client) error {
		if n <= 0 {
			return fmt.Errorf("%w: max connections %d is not positive", ErrInvalidConfig, n)
		}
		c.maxConns = n
		return nil
	}
}

// WithUnencryptedHTTP2 makes the default transport speak HTTP/2 without TLS
// (prior knowledge) to an http:// base URL, which is only ever a loopback
// simulator whose server accepts it. Over HTTP/2 thousands of calls in
// flight share a few connections, as they do with iDenfy over https, where
// HTTP/2 is negotiated by TLS without this option; over HTTP/1.1 each call
// in flight holds a connection of its own. It has no effect together with
// WithHTTPClient.
func WithUnencryptedHTTP2() Option {
	return func(c *Client) error {
		c.h2c = true
		return nil
	}
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		c.userAgent = ua
		return nil
	}
}

// Client calls the iDenfy phone verification API. It is safe for concurrent
// use.
type Client struct {
	sendURL   *url.URL
	verifyURL *url.URL
	header    http.Header
	auth      string
	userAgent string
	timeout   time.Duration
	maxConns  int
	h2c       bool
	http      *http.Client
}

// NewClient returns a Client for cfg.
func NewClient(cfg Config, opts ...Option) (*Client, error) {
	base, err := cfg.valid()
	if err != nil {
		return nil, err
	}
	c := &Client{
		sendURL:   endpoint(base, PathSendSMS),
		verifyURL: endpoint(base, PathVerifySMS),
		auth:      "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.APIKey+":"+cfg.APISecret)),
		userAgent: "idenfy-worker",
		timeout:   DefaultTimeout,
		maxConns:  100,
	}
	for _, opt := range opts {
		if err := opt(c); err != nil {
			return nil, err
		}
	}
	c.header = http.Header{
		"Authorization": {c.auth},
		"Content-Type":  {"application/json"},
		"Accept":        {"application/json"},
		"User-Agent":    {c.userAgent},
	}
	if c.h2c && base.Scheme != "http" {
		return nil, fmt.Errorf("%w: unencrypted HTTP/2 is for an http:// base URL; https negotiates HTTP/2 by itself", ErrInvalidConfig)
	}
	if c.http == nil {
		t := newTransport(c.maxConns, c.timeout)
		if c.h2c {
			t.Protocols = new(http.Protocols)
			t.Protocols.SetUnencryptedHTTP2(true)
		}
		c.http = &http.Client{
			Transport:     t,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return c, nil
}

// endpoint is base with path appended.
func endpoint(base *url.URL, path string) *url.URL {
	u := *base
	u.Path, u.RawPath = base.Path+path, ""
	return &u
}

func newTransport(maxConns int, timeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = maxConns
	t.MaxIdleConnsPerHost = maxConns
	// Shorter than the usual 60s of load balancers: a POST written on a
	// connection the far side already closed would fail after being
	// written, and count as ambiguous for nothing.
	t.IdleConnTimeout = 30 * time.Second
	t.ResponseHeaderTimeout = timeout
	// Small buffers: the API's messages are tiny, and a worker may keep
	// thousands of connections open.
	t.ReadBufferSize = 2 << 10
	t.WriteBufferSize = 2 << 10
	return t
}

// SendSMSRequest is the body of a send-sms call.
type SendSMSRequest struct {
	PhoneNumber string `json:"phone_number"`
	SenderName  string `json:"sender_name,omitempty"`
}

// SendSMSResponse is iDenfy's answer to send-sms.
type SendSMSResponse struct {
	RequestID string `json:"request_id"`
}

// VerifySMSRequest is the body of a verify-sms call.
type VerifySMSRequest struct {
	RequestID    string `json:"request_id"`
	ReceivedCode string `json:"received_code"`
}

// VerifySMSResponse is iDenfy's answer to verify-sms. IsVerified false means
// a wrong code, a code already validated, or too many wrong attempts.
type VerifySMSResponse struct {
	IsVerified bool `json:"is_verified"`
}

// SendSMS asks iDenfy to text a verification code to req.PhoneNumber. Every
// call that reaches iDenfy texts the user again.
func (c *Client) SendSMS(ctx context.Context, req SendSMSRequest) (SendSMSResponse, error) {
	var wire struct {
		RequestID *string `json:"request_id"`
	}
	if err := c.do(ctx, "send-sms", c.sendURL, req, &wire); err != nil {
		return SendSMSResponse{}, err
	}
	if wire.RequestID == nil || *wire.RequestID == "" {
		return SendSMSResponse{}, &ResponseError{Status: http.StatusOK, Reason: "request_id is missing or empty"}
	}
	return SendSMSResponse{RequestID: *wire.RequestID}, nil
}

// VerifySMS asks iDenfy whether req.ReceivedCode is the code sent for
// req.RequestID. A code is accepted once: verifying it again answers false.
func (c *Client) VerifySMS(ctx context.Context, req VerifySMSRequest) (VerifySMSResponse, error) {
	var wire struct {
		IsVerified *bool `json:"is_verified"`
	}
	if err := c.do(ctx, "verify-sms", c.verifyURL, req, &wire); err != nil {
		return VerifySMSResponse{}, err
	}
	if wire.IsVerified == nil {
		return VerifySMSResponse{}, &ResponseError{Status: http.StatusOK, Reason: "is_verified is missing"}
	}
	return VerifySMSResponse{IsVerified: *wire.IsVerified}, nil
}

// do makes one attempt: POST body as JSON, decode a 2xx answer into out.
func (c *Client) do(ctx context.Context, op string, url *url.URL, body, out any) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("idenfy: %s: encoding request: %w", op, err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, errTimeout)
	defer cancel()

	var written atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				written.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "", nil)
	if err != nil {
		return fmt.Errorf("idenfy: %s: building request: %w", op, err)
	}
	// The URL and the headers are the same for every call: parsed and built
	// once, and shared read-only (a RoundTripper must not modify a request).
	req.URL, req.Host, req.Header = url, url.Host, c.header
	req.Body = io.NopCloser(bytes.NewReader(payload))
	req.ContentLength = int64(len(payload))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }

	resp, err := c.http.Do(req)
	if err != nil {
		return &TransportError{Op: op, Written: written.Load(), Err: attemptError(ctx, err)}
	}
	defer resp.Body.Close()

	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		if resp.StatusCode/100 != 2 {
			// The status says enough; only its message is lost.
			return newAPIError(resp, nil)
		}
		return &TransportError{Op: op, Written: true, Err: attemptError(ctx, err)}
	}
	if len(data) > MaxResponseSize {
		if resp.StatusCode/100 == 2 {
			return &ResponseError{Status: resp.StatusCode, Reason: fmt.Sprintf("body over %d bytes", MaxResponseSize)}
		}
		data = data[:0]
	}
	if resp.StatusCode/100 != 2 {
		return newAPIError(resp, data)
	}
	if err := decodeJSONObject(data, out); err != nil {
		return &ResponseError{Status: resp.StatusCode, Reason: err.Error()}
	}
	return nil
}

// attemptError prefers the reason the context ended (our timeout, the
// caller's cancellation) over the transport's wording of it.
func attemptError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		if errors.Is(err, cause) {
			return err
		}
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

func decodeJSONObject(data []byte, out any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return errors.New("body is empty")
	}
	if trimmed[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	if err := json.Unmarshal(trimmed, out); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return fmt.Errorf("field %s is a JSON %s, want %s", typeErr.Field, typeErr.Value, typeErr.Type)
		}
		return errors.New("body is not valid JSON")
	}
	return nil
}

func newAPIError(resp *http.Response, body []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var wire struct {
		Identifier any `json:"identifier"`
		Message    any `json:"message"`
		Detail     any `json:"detail"`
	}
	if decodeJSONObject(body, &wire) == nil {
		e.Identifier = cleanIdentifier(wire.Identifier)
		e.Message = cleanMessage(wire.Message)
		if e.Message == "" {
			e.Message = cleanMessage(wire.Detail)
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// cleanIdentifier keeps an identifier only if it looks like one
// (UPPER_SNAKE_CASE, bounded), so that nothing else travels in it.
func cleanIdentifier(v any) string {
	s, ok := v.(string)
	if !ok || len(s) == 0 || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return ""
		}
	}
	return s
}

// cleanMessage turns a vendor message (a string, or a field->errors object
// as validation frameworks produce) into one bounded, printable line with
// digit runs masked.
func cleanMessage(v any) string {
	var s string
	switch m := v.(type) {
	case string:
		s = m
	case nil:
		return ""
	default:
		b, err := json.Marshal(m)
		if err != nil {
			return ""
		}
		s = string(b)
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessageLength {
		cut := maxMessageLength
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return messages.RedactText(s)
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// maxRetryAfter caps a Retry-After value, in either form.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
// Anything else, or a time in the past, is zero.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			secs = int64(maxRetryAfter / time.Second)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}
