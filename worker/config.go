package worker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nyaruka/phonenumbers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// Defaults of Config.
const (
	DefaultStream          = "IDENFY_PHONE_JOBS"
	DefaultBucket          = "idenfy_phone"
	DefaultConsumer        = "idenfy-workers"
	DefaultConcurrency     = 64
	DefaultRetryMaxElapsed = 20 * time.Second
	DefaultJobMaxAge       = 5 * time.Minute
	DefaultResultTTL       = 15 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultResultsStream   = "IDENFY_PHONE_RESULTS"
	DefaultResultsMaxAge   = 24 * time.Hour
)

// ResultsStreamOff as Config.ResultsStream publishes result events with
// core NATS only, stored nowhere.
const ResultsStreamOff = "off"

// MinResultTTL is the shortest Config.ResultTTL: claims live in the same
// bucket, and a shorter life would let one vanish under a call in progress.
const MinResultTTL = time.Minute

// Config configures a Worker. Conn, Client and HashKey are required; every
// other zero value means its default.
type Config struct {
	// Conn is the NATS connection; the caller owns it.
	Conn *nats.Conn
	// Client calls iDenfy.
	Client *idenfy.Client
	// HashKey keys the hashes of phone numbers, codes and idempotency keys
	// kept in JetStream, so that they cannot be reversed by enumeration.
	// Every worker of a deployment needs the same one.
	HashKey []byte

	Logger zerolog.Logger

	Prefix   string // subject prefix, messages.DefaultPrefix
	Stream   string // jobs stream, DefaultStream
	Consumer string // durable consumer of the stream, DefaultConsumer
	Bucket   string // KV bucket of outcomes; send counters go to Bucket+"_limits"
	Replicas int    // replicas of the streams and buckets it creates, 1

	// ResultsStream stores every result event, DefaultResultsStream;
	// ResultsStreamOff publishes them with core NATS only.
	ResultsStream string
	// ResultsMaxAge is how long the results stream keeps an event,
	// DefaultResultsMaxAge.
	ResultsMaxAge time.Duration

	Concurrency     int           // HTTP calls to iDenfy in flight per process, both intakes; twice as many requests are admitted per intake
	RateLimit       RateLimit     // upstream calls of the whole deployment (every worker on Bucket); zero: none
	Breaker         Breaker       // the deployment's circuit breaker toward iDenfy, DefaultBreaker; Off disables
	BreakerProbe    time.Duration // while the breaker is open, one call of the deployment per this interval, DefaultBreakerProbe
	RetryMaxElapsed time.Duration // backoff budget of one request
	JobMaxAge       time.Duration // older jobs fail with expired
	ResultTTL       time.Duration // how long outcomes are remembered, at least MinResultTTL
	ShutdownTimeout time.Duration // how long Shutdown waits for requests in flight

	// AllowedCountries is an ISO 3166 alpha-2 allow-list; empty allows all.
	AllowedCountries []string
	// SendLimits per number; nil means none (use DefaultSendLimits for the
	// contract's default).
	SendLimits []SendLimit
	// BlockedNumberTypes are refused with number_not_allowed; nil blocks
	// none (use DefaultBlockedNumberTypes for the contract's default).
	BlockedNumberTypes []string
	// PumpingGuard pauses a range with many sends and few verified; the
	// zero value is off (use DefaultPumpingGuard for the contract's
	// default).
	PumpingGuard PumpingGuard

	// DisableRequests and DisableJobs turn an intake off.
	DisableRequests bool
	DisableJobs     bool

	// Registerer receives the worker's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// FieldError is a Config setting that Validate refused.
type FieldError struct {
	Field string // the Config field, e.g. "ResultTTL"
	Err   error
}

func (e *FieldError) Error() string { return "worker: Config." + e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks every setting of c as New would, after defaults, without
// the dependencies (Conn, Client, HashKey), so that a program can check its
// configuration before it connects anywhere. The error joins one
// *FieldError per bad setting.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if err := messages.ValidatePrefix(c.Prefix); err != nil {
		bad("Prefix", "%w", err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("Replicas", "%d is not between 1 and 5", c.Replicas)
	}
	if c.Concurrency < 1 {
		bad("Concurrency", "%d is not positive", c.Concurrency)
	}
	if c.ResultsStream != ResultsStreamOff && !validStreamName(c.ResultsStream) {
		bad("ResultsStream", "%q is not a stream name: no whitespace, '.', '*', '>', '/' or '\\'", c.ResultsStream)
	}
	if c.ResultsStream == c.Stream {
		bad("ResultsStream", "%q is also the jobs stream", c.ResultsStream)
	}
	if c.ResultsMaxAge < time.Minute {
		bad("ResultsMaxAge", "%v is shorter than 1m", c.ResultsMaxAge)
	}
	for field, d := range map[string]time.Duration{
		"RetryMaxElapsed": c.RetryMaxElapsed, "JobMaxAge": c.JobMaxAge, "ShutdownTimeout": c.ShutdownTimeout,
	} {
		if d < 0 {
			bad(field, "%v is negative", d)
		}
	}
	if c.ResultTTL < MinResultTTL {
		bad("ResultTTL", "%v is shorter than %v: claims live in the same bucket and must outlive a call", c.ResultTTL, MinResultTTL)
	}
	if b := c.Breaker; !b.Off && b.N != 0 && (b.N < 1 || b.Window < time.Second) {
		bad("Breaker", "%v is not a positive count per at least 1s", b)
	}
	if c.BreakerProbe != 0 && c.BreakerProbe < time.Second {
		bad("BreakerProbe", "%v is shorter than 1s", c.BreakerProbe)
	}
	if c.RateLimit.N < 0 || (c.RateLimit.N > 0 && c.RateLimit.Per <= 0) {
		bad("RateLimit", "%v is not a positive count per positive duration", c.RateLimit)
	}
	for _, l := range c.SendLimits {
		if l.Count < 1 || l.Window < time.Second {
			bad("SendLimits", "%v is not a positive count per at least 1s", l)
		}
	}
	for _, nt := range c.BlockedNumberTypes {
		if !isNumberType(nt) {
			bad("BlockedNumberTypes", "%q is not a number type; valid types: %s", nt, validNumberTypes())
		}
	}
	if g := c.PumpingGuard; g.N != 0 && (g.N < 1 || g.N > MaxPumpingGuardN || g.Window < time.Second) {
		bad("PumpingGuard", "%v is not a count from 1 to %d per at least 1s", g, MaxPumpingGuardN)
	}
	supported := phonenumbers.GetSupportedRegions()
	for _, cc := range c.AllowedCountries {
		if !supported[cc] {
			bad("AllowedCountries", "%q is not an ISO 3166 alpha-2 country code with phone numbers", cc)
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = messages.DefaultPrefix
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.RetryMaxElapsed == 0 {
		c.RetryMaxElapsed = DefaultRetryMaxElapsed
	}
	if c.JobMaxAge == 0 {
		c.JobMaxAge = DefaultJobMaxAge
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = DefaultResultTTL
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ResultsStream == "" {
		c.ResultsStream = DefaultResultsStream
	}
	if c.ResultsMaxAge == 0 {
		c.ResultsMaxAge = DefaultResultsMaxAge
	}
	if c.Breaker.N == 0 && !c.Breaker.Off {
		c.Breaker = DefaultBreaker
	}
	if c.BreakerProbe == 0 {
		c.BreakerProbe = DefaultBreakerProbe
	}
}

// check is New's validation: the dependencies, then the settings.
func (c *Config) check() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, &FieldError{Field: "Conn", Err: errors.New("required")})
	}
	if c.Client == nil {
		errs = append(errs, &FieldError{Field: "Client", Err: errors.New("required")})
	}
	if len(c.HashKey) == 0 {
		errs = append(errs, &FieldError{Field: "HashKey", Err: errors.New("required")})
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Errors of New, Start and Shutdown, matched with errors.Is.
var (
	// ErrInvalidConfig: New refused the Config; the wrapped *FieldError
	// values name each setting.
	ErrInvalidConfig = errors.New("worker: invalid configuration")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("worker: already started")
	// ErrShutDown: Start was called after Shutdown.
	ErrShutDown = errors.New("worker: shut down")
	// ErrNoJetStream: the NATS server (or the account) has no JetStream.
	// It heals when the server is restarted with JetStream on.
	ErrNoJetStream = errors.New("JetStream is not enabled on this server (start nats-server with -js or a jetstream block)")
	// ErrNotConnected: the NATS connection is down; it heals on reconnect.
	ErrNotConnected = errors.New("not connected to NATS")
)

// Option configures a Worker beyond its Config.
type Option func(*Worker) error

// WithClock replaces the wall clock, for tests.
func WithClock(c Clock) Option {
	return func(w *Worker) error {
		if c == nil {
			return errors.New("worker: nil clock")
		}
		w.clock = c
		return nil
	}
}

// WithLease sets how long a claim on an idempotency key lasts without
// renewal (default 30s): a worker that dies holding it delays that job by
// about this much.
func WithLease(d time.Duration) Option {
	return func(w *Worker) error {
		if d < 100*time.Millisecond {
			return fmt.Errorf("worker: lease %v is shorter than 100ms", d)
		}
		w.lease = d
		return nil
	}
}

// WithJobRetryDelay sets the pause before a job that failed retryably (an
// outage or rate limit that outlasted the retry budget) is delivered again;
// it doubles with each delivery up to a minute. The default is 5s.
func WithJobRetryDelay(d time.Duration) Option {
	return func(w *Worker) error {
		if d <= 0 {
			return fmt.Errorf("worker: job retry delay %v is not positive", d)
		}
		w.jobRetryBase = d
		return nil
	}
}

// RateLimit allows N upstream calls per Per; the zero value means no limit.
type RateLimit struct {
	N   int
	Per time.Duration
}

func (r RateLimit) String() string {
	if r.N == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d/%s", r.N, formatWindow(r.Per))
}

// ParseRateLimit reads "10000/1h"; "" means no limit.
func ParseRateLimit(s string) (RateLimit, error) {
	if s == "" {
		return RateLimit{}, nil
	}
	n, per, err := parseRate(s)
	if err != nil {
		return RateLimit{}, err
	}
	return RateLimit{N: n, Per: per}, nil
}

// SendLimit allows Count sends to one number within Window.
type SendLimit struct {
	Count  int
	Window time.Duration
}

func (l SendLimit) String() string {
	return fmt.Sprintf("%d/%s", l.Count, formatWindow(l.Window))
}

// DefaultSendLimits are the per-number limits when none are configured.
var DefaultSendLimits = []SendLimit{{Count: 3, Window: 10 * time.Minute}, {Count: 10, Window: 24 * time.Hour}}

// ParseSendLimits reads "3/10m,10/24h"; "off" (or "") means no limits.
func ParseSendLimits(s string) ([]SendLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "off") {
		return nil, nil
	}
	var limits []SendLimit
	for _, part := range strings.Split(s, ",") {
		n, per, err := parseRate(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		limits = append(limits, SendLimit{Count: n, Window: per})
	}
	return limits, nil
}

// ParseCountries reads an ISO 3166 alpha-2 list such as "US,GB,LT"; empty
// means every country. Codes phone numbering does not know are refused, so
// that a typo does not silently block a country.
func ParseCountries(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	supported := phonenumbers.GetSupportedRegions()
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.ToUpper(strings.TrimSpace(c))
		if !supported[c] {
			return nil, fmt.Errorf("%q is not an ISO 3166 alpha-2 country code with phone numbers", c)
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// parseRate reads "N/duration", with "1h", "10m", "24h", "1d" forms; a bare
// unit means one of it ("10/h").
func parseRate(s string) (int, time.Duration, error) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not of the form COUNT/DURATION, e.g. 3/10m", s)
	}
	var n int
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != num {
		return 0, 0, fmt.Errorf("%q: count %q is not a positive whole number", s, num)
	}
	per, err := parseWindow(unit)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: %w", s, err)
	}
	return n, per, nil
}

func parseWindow(s string) (time.Duration, error) {
	switch s {
	case "s", "m", "h":
		s = "1" + s
	case "d", "1d":
		return 24 * time.Hour, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err == nil && n > 0 && fmt.Sprint(n) == days {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("duration %q is not a duration of at least 1s such as 10m, 1h or 1d", s)
	}
	return d, nil
}

func formatWindow(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// validStreamName reports whether JetStream takes name as a stream name.
func validStreamName(name string) bool {
	return name != "" && len(name) <= 255 && !strings.ContainsAny(name, " \t\r\n.*>/\\")
}
