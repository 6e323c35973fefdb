package main

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// config is the worker's configuration, read from the environment.
type config struct {
	NATSURL     string
	NATSCreds   string
	NATSNKey    string
	NATSTLSCA   string
	NATSTLSCert string
	NATSTLSKey  string
	APIKey      string
	APISecret   string
	HashKey     []byte
	// HashKeyDerived is set when WORKER_HASH_KEY is unset and the hash
	// key comes from the API secret.
	HashKeyDerived bool
	BaseURL        string
	Timeout        time.Duration
	H2C            bool
	Prefix         string
	Stream         string
	ResultsStream  string
	ResultsMaxAge  time.Duration
	Bucket         string
	Replicas       int
	Concurrency    int
	RateLimit      worker.RateLimit
	Breaker        worker.Breaker
	BreakerProbe   time.Duration
	RetryMax       time.Duration
	JobMaxAge      time.Duration
	ResultTTL      time.Duration
	Shutdown       time.Duration
	Countries      []string
	SendLimits     []worker.SendLimit
	BlockedTypes   []string
	PumpingGuard   worker.PumpingGuard
	MetricsAddr    string
	Pprof          bool
	LogLevel       zerolog.Level
	LogFormat      string
}

// envVar is one variable of the environment. envVars is the one table of
// them: loadConfig reads it, help prints it, and the unknown-variable
// warning and the deployment tests compare against it, so none can drift.
type envVar struct {
	name    string
	def     string // the value when unset or blank; help prints it
	unset   string // what help prints when def is empty
	meaning string
	field   string // the worker.Config field it sets, if any: Validate's errors name it
	// parse reads the variable into c; nil for NAME_FILE, read with NAME.
	parse func(e *env, v envVar, c *config)
}

var envVars = []envVar{
	{name: "NATS_URL", def: "nats://127.0.0.1:4222", meaning: "NATS servers, comma-separated", parse: parseNATSURL},
	{name: "NATS_CREDS", unset: "unset", meaning: "NATS credentials file (JWT + NKey seed)",
		parse: fileVar(func(c *config) *string { return &c.NATSCreds }, true)},
	{name: "NATS_NKEY", unset: "unset", meaning: "NATS NKey seed file",
		parse: fileVar(func(c *config) *string { return &c.NATSNKey }, true)},
	{name: "NATS_TLS_CA", unset: "unset", meaning: "CA file to trust for NATS TLS",
		parse: fileVar(func(c *config) *string { return &c.NATSTLSCA }, false)},
	{name: "NATS_TLS_CERT", unset: "unset", meaning: "NATS TLS client certificate file (with NATS_TLS_KEY)",
		parse: fileVar(func(c *config) *string { return &c.NATSTLSCert }, false)},
	{name: "NATS_TLS_KEY", unset: "unset", meaning: "NATS TLS client key file (with NATS_TLS_CERT)",
		parse: fileVar(func(c *config) *string { return &c.NATSTLSKey }, true)},
	{name: "IDENFY_API_KEY", unset: "required", meaning: "iDenfy API key (basic auth user); or IDENFY_API_KEY_FILE",
		parse: secretVar(func(c *config) *string { return &c.APIKey }, true)},
	{name: "IDENFY_API_KEY_FILE", unset: "unset", meaning: "a file holding IDENFY_API_KEY (a Docker or Kubernetes secret)"},
	{name: "IDENFY_API_SECRET", unset: "required", meaning: "iDenfy API secret (basic auth password); or IDENFY_API_SECRET_FILE",
		parse: secretVar(func(c *config) *string { return &c.APISecret }, true)},
	{name: "IDENFY_API_SECRET_FILE", unset: "unset", meaning: "a file holding IDENFY_API_SECRET"},
	{name: "IDENFY_BASE_URL", def: idenfy.DefaultBaseURL, meaning: "iDenfy API; plain http:// only for loopback hosts (a simulator)",
		parse: strVar(func(c *config) *string { return &c.BaseURL })},
	{name: "IDENFY_TIMEOUT", def: formatDuration(idenfy.DefaultTimeout), meaning: "one HTTP attempt to iDenfy",
		parse: durationVar(func(c *config) *time.Duration { return &c.Timeout })},
	{name: "IDENFY_H2C", def: "false", meaning: "HTTP/2 without TLS to an http:// simulator",
		parse: boolVar(func(c *config) *bool { return &c.H2C })},
	{name: "WORKER_SUBJECT_PREFIX", def: messages.DefaultPrefix, field: "Prefix", meaning: "subject prefix P: P.send, P.verify, P.jobs.send, P.results.send...",
		parse: strVar(func(c *config) *string { return &c.Prefix })},
	{name: "WORKER_STREAM", def: worker.DefaultStream, field: "Stream", meaning: "JetStream stream of jobs", parse: parseStream},
	{name: "WORKER_RESULTS_STREAM", def: worker.DefaultResultsStream, field: "ResultsStream",
		meaning: "JetStream stream keeping every result event for observers; off: core publish only",
		parse:   strVar(func(c *config) *string { return &c.ResultsStream })},
	{name: "WORKER_RESULTS_MAX_AGE", def: formatDuration(worker.DefaultResultsMaxAge), field: "ResultsMaxAge",
		meaning: "how long the results stream keeps a result (when the worker creates it)",
		parse:   durationVar(func(c *config) *time.Duration { return &c.ResultsMaxAge })},
	{name: "WORKER_KV_BUCKET", def: worker.DefaultBucket, field: "Bucket", meaning: "KV bucket of outcomes; send counters go to <bucket>_limits", parse: parseBucket},
	{name: "WORKER_REPLICAS", def: "1", field: "Replicas", meaning: "replicas of the stream and buckets the worker creates (3 in a cluster)",
		parse: intVar(func(c *config) *int { return &c.Replicas })},
	{name: "WORKER_CONCURRENCY", def: strconv.Itoa(worker.DefaultConcurrency), field: "Concurrency", meaning: "HTTP calls to iDenfy in flight per process",
		parse: intVar(func(c *config) *int { return &c.Concurrency })},
	{name: "WORKER_RATE_LIMIT", unset: "unset (none)", field: "RateLimit", meaning: "upstream calls of the whole deployment (every worker on the same bucket), e.g. 10000/1h or 20/s", parse: parseRateLimit},
	{name: "WORKER_BREAKER", def: worker.DefaultBreaker.String(), field: "Breaker",
		meaning: "circuit breaker of the deployment: opens after N unavailable answers in a row within the window; off disables", parse: parseBreaker},
	{name: "WORKER_BREAKER_PROBE", def: formatDuration(worker.DefaultBreakerProbe), field: "BreakerProbe",
		meaning: "while the breaker is open, one call of the deployment per this interval tries iDenfy", parse: parseBreakerProbe},
	{name: "WORKER_RETRY_MAX_ELAPSED", def: formatDuration(worker.DefaultRetryMaxElapsed), field: "RetryMaxElapsed", meaning: "backoff budget of one request",
		parse: durationVar(func(c *config) *time.Duration { return &c.RetryMax })},
	{name: "WORKER_JOB_MAX_AGE", def: formatDuration(worker.DefaultJobMaxAge), field: "JobMaxAge", meaning: "older jobs fail with expired",
		parse: durationVar(func(c *config) *time.Duration { return &c.JobMaxAge })},
	{name: "WORKER_RESULT_TTL", def: formatDuration(worker.DefaultResultTTL), field: "ResultTTL", meaning: "how long outcomes and verify memory are kept (at least " + formatDuration(worker.MinResultTTL) + ")",
		parse: durationVar(func(c *config) *time.Duration { return &c.ResultTTL })},
	{name: "WORKER_SHUTDOWN_TIMEOUT", def: formatDuration(worker.DefaultShutdownTimeout), field: "ShutdownTimeout", meaning: "how long a stopping worker lets requests in flight finish",
		parse: durationVar(func(c *config) *time.Duration { return &c.Shutdown })},
	{name: "WORKER_ALLOWED_COUNTRIES", unset: "unset (all)", field: "AllowedCountries", meaning: "ISO 3166 alpha-2 allow-list, e.g. US,GB,LT", parse: parseCountries},
	{name: "WORKER_SEND_LIMITS", def: "3/10m,10/24h", field: "SendLimits", meaning: "per-number send limits, cluster-wide; off disables", parse: parseSendLimits},
	{name: "WORKER_BLOCKED_NUMBER_TYPES", def: strings.Join(worker.DefaultBlockedNumberTypes, ","), field: "BlockedNumberTypes",
		meaning: "number types refused with number_not_allowed; unknown adds numbers the plan does not know; none blocks nothing", parse: parseBlockedTypes},
	{name: "WORKER_PUMPING_GUARD", def: worker.DefaultPumpingGuard.String(), field: "PumpingGuard",
		meaning: "pause a number range after N sends within the window with fewer than 1 in 5 verified; off disables", parse: parsePumpingGuard},
	{name: "WORKER_HASH_KEY", unset: "derived from the API secret", meaning: "keys the hashes kept in JetStream; the same on every worker; or WORKER_HASH_KEY_FILE",
		parse: parseHashKey},
	{name: "WORKER_HASH_KEY_FILE", unset: "unset", meaning: "a file holding WORKER_HASH_KEY"},
	{name: "METRICS_ADDR", def: ":9464", meaning: "/metrics, /healthz and /readyz; empty disables", parse: parseMetricsAddr},
	{name: "METRICS_PPROF", def: "false", meaning: "also serve Go's profiler under /debug/pprof/ (keep the address private)",
		parse: boolVar(func(c *config) *bool { return &c.Pprof })},
	{name: "LOG_LEVEL", def: "info", meaning: "trace, debug, info, warn or error", parse: parseLogLevel},
	{name: "LOG_FORMAT", def: "json", meaning: "json, or console for people", parse: parseLogFormat},
}

// lookupVar finds a variable of the table.
func lookupVar(name string) (envVar, bool) {
	for _, v := range envVars {
		if v.name == name {
			return v, true
		}
	}
	return envVar{}, false
}

// configError names the variable at fault; its text is the one line
// start-up prints for it. It never quotes a secret's value.
type configError struct {
	name   string
	value  string
	secret bool
	reason string
}

func (e *configError) Error() string {
	if e.secret || e.value == "" {
		return fmt.Sprintf("config: %s: %s", e.name, e.reason)
	}
	return fmt.Sprintf("config: %s=%q: %s", e.name, e.value, e.reason)
}

// configErrors are every problem of one configuration, a line each, so that
// an operator fixes them in one go rather than one per start.
type configErrors []*configError

func (es configErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es configErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// env reads variables, remembering every problem.
type env struct {
	lookup func(string) (string, bool)
	errs   configErrors
}

func (e *env) getenv(name string) string {
	v, _ := e.lookup(name)
	return v
}

func (e *env) fail(name, value, reason string) {
	e.errs = append(e.errs, &configError{name: name, value: value, reason: reason})
}

func (e *env) failSecret(name, reason string) {
	e.errs = append(e.errs, &configError{name: name, secret: true, reason: reason})
}

// failed tells whether a problem names the variable already.
func (e *env) failed(name string) bool {
	return slices.ContainsFunc(e.errs, func(ce *configError) bool {
		return ce.name == name || strings.HasPrefix(ce.name, name+"_FILE")
	})
}

func (e *env) str(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}

func (e *env) duration(name, def string) time.Duration {
	v := e.str(name, def)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.fail(name, v, "not a positive duration such as 10s, 5m or 1h")
		d, _ = time.ParseDuration(def)
	}
	return d
}

// boolean reads true/false (or 1/0).
func (e *env) boolean(name, def string) bool {
	switch v := strings.ToLower(e.str(name, def)); v {
	case "true", "1":
		return true
	case "false", "0":
		return false
	default:
		e.fail(name, v, "true or false")
		return false
	}
}

// integer reads a positive whole number; the worker's Validate judges its
// range.
func (e *env) integer(name, def string) int {
	v := e.str(name, def)
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		e.fail(name, v, "not a positive whole number")
		n, _ = strconv.Atoi(def)
	}
	return n
}

// file checks that a path names a readable file. With secret, the path is
// not quoted in an error: a common mistake puts the credential itself (an
// nkey seed, a key) where its path belongs.
func (e *env) file(name string, secret bool) string {
	v := e.str(name, "")
	if v == "" {
		return ""
	}
	reason := ""
	if fi, err := os.Stat(v); err != nil {
		reason = "cannot read the file: " + errors.Unwrap(err).Error()
	} else if fi.IsDir() {
		reason = "is a directory, not a file"
	} else if f, err := os.Open(v); err != nil {
		reason = "cannot read the file: " + errors.Unwrap(err).Error()
	} else {
		f.Close()
		return v
	}
	if secret {
		e.failSecret(name, reason)
	} else {
		e.fail(name, v, reason)
	}
	return v
}

// secret reads NAME or NAME_FILE (not both). A file's trailing newline is
// dropped; a value of only whitespace counts as unset. NAME_FILE's path is
// never quoted in an error, in case the secret was put there by mistake.
func (e *env) secret(name string, required bool) string {
	v := e.getenv(name)
	if strings.TrimSpace(v) == "" {
		v = ""
	}
	path := strings.TrimSpace(e.getenv(name + "_FILE"))
	switch {
	case v != "" && path != "":
		e.failSecret(name, "set either "+name+" or "+name+"_FILE, not both")
		return ""
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			e.failSecret(name+"_FILE", "cannot read the file: "+errors.Unwrap(err).Error())
			return ""
		}
		v = strings.TrimRight(string(b), "\r\n")
		if v == "" {
			e.failSecret(name+"_FILE", "the file is empty")
		}
	case v == "" && required:
		e.failSecret(name, "required (or "+name+"_FILE naming a file that holds it)")
	}
	if strings.ContainsAny(v, "\r\n") {
		e.failSecret(name, "holds a line break")
	}
	return v
}

func strVar(field func(*config) *string) func(*env, envVar, *config) {
	return func(e *env, v envVar, c *config) { *field(c) = e.str(v.name, v.def) }
}

func durationVar(field func(*config) *time.Duration) func(*env, envVar, *config) {
	return func(e *env, v envVar, c *config) { *field(c) = e.duration(v.name, v.def) }
}

func intVar(field func(*config) *int) func(*env, envVar, *config) {
	return func(e *env, v envVar, c *config) { *field(c) = e.integer(v.name, v.def) }
}

func boolVar(field func(*config) *bool) func(*env, envVar, *config) {
	return func(e *env, v envVar, c *config) { *field(c) = e.boolean(v.name, v.def) }
}

func fileVar(field func(*config) *string, secret bool) func(*env, envVar, *config) {
	return func(e *env, v envVar, c *config) { *field(c) = e.file(v.name, secret) }
}

func secretVar(field func(*config) *string, required bool) func(*env, envVar, *config) {
	return func(e *env, v envVar, c *config) { *field(c) = e.secret(v.name, required) }
}

func parseNATSURL(e *env, v envVar, c *config) {
	c.NATSURL = e.str(v.name, v.def)
	for _, u := range strings.Split(c.NATSURL, ",") {
		if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
			// Quoted redacted: a URL may carry a user and password or a token.
			e.fail(v.name, redactURLs(c.NATSURL), err.Error())
			return
		}
	}
}

var (
	streamNameRE = regexp.MustCompile(`^[^\s.*>/\\]{1,255}$`)
	bucketNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,200}$`)
)

func parseStream(e *env, v envVar, c *config) {
	if c.Stream = e.str(v.name, v.def); !streamNameRE.MatchString(c.Stream) {
		e.fail(v.name, c.Stream, "a stream name may not contain whitespace, '.', '*', '>', '/' or '\\'")
	}
}

func parseBucket(e *env, v envVar, c *config) {
	if c.Bucket = e.str(v.name, v.def); !bucketNameRE.MatchString(c.Bucket) {
		e.fail(v.name, c.Bucket, "a bucket name holds only letters, digits, '_' and '-'")
	}
}

func parseRateLimit(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.RateLimit, err = worker.ParseRateLimit(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

func parseCountries(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.Countries, err = worker.ParseCountries(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

func parseSendLimits(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.SendLimits, err = worker.ParseSendLimits(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

func parseBreaker(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.Breaker, err = worker.ParseBreaker(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

func parseBreakerProbe(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.BreakerProbe, err = worker.ParseBreakerProbe(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

func parseBlockedTypes(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.BlockedTypes, err = worker.ParseBlockedNumberTypes(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

func parsePumpingGuard(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var err error
	if c.PumpingGuard, err = worker.ParsePumpingGuard(s); err != nil {
		e.fail(v.name, s, err.Error())
	}
}

// parseHashKey keeps the key as given; loadConfig derives the hash key
// from it.
func parseHashKey(e *env, v envVar, c *config) {
	c.HashKey = []byte(e.secret(v.name, false))
}

// parseMetricsAddr tells set-but-empty (off) from unset (the default).
func parseMetricsAddr(e *env, v envVar, c *config) {
	s, ok := e.lookup(v.name)
	if !ok {
		s = v.def
	}
	if c.MetricsAddr = strings.TrimSpace(s); c.MetricsAddr == "" {
		return
	}
	if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
		e.fail(v.name, c.MetricsAddr, "not host:port (e.g. :9464), or empty to disable")
	}
}

// logLevels are the LOG_LEVEL names. zerolog.ParseLevel would also take
// numbers ("42" silences every log line) and levels the worker never uses.
var logLevels = map[string]zerolog.Level{
	"trace": zerolog.TraceLevel,
	"debug": zerolog.DebugLevel,
	"info":  zerolog.InfoLevel,
	"warn":  zerolog.WarnLevel,
	"error": zerolog.ErrorLevel,
}

func parseLogLevel(e *env, v envVar, c *config) {
	s := e.str(v.name, v.def)
	var ok bool
	if c.LogLevel, ok = logLevels[strings.ToLower(s)]; !ok {
		e.fail(v.name, s, "one of trace, debug, info, warn, error")
	}
}

func parseLogFormat(e *env, v envVar, c *config) {
	if c.LogFormat = strings.ToLower(e.str(v.name, v.def)); c.LogFormat != "json" && c.LogFormat != "console" {
		e.fail(v.name, c.LogFormat, "json or console")
	}
}

// loadConfig reads the configuration through lookup (os.LookupEnv in
// production). The error, a configErrors, names every variable that is
// missing or malformed, the worker's own rules (worker.Config.Validate)
// included, so that a bad setting stops start-up before any connection.
func loadConfig(lookup func(string) (string, bool)) (config, error) {
	e := &env{lookup: lookup}
	var c config
	for _, v := range envVars {
		if v.parse != nil {
			v.parse(e, v, &c)
		}
	}
	checkTogether(e, &c)
	validateWorker(e, c)

	// Hashes of numbers and codes in JetStream are keyed by a secret so that
	// they cannot be reversed by trying every number.
	hashKey := string(c.HashKey)
	if hashKey == "" {
		c.HashKeyDerived = true
		hashKey = "idenfy-api-secret:" + c.APISecret
	}
	sum := sha256.Sum256([]byte("idenfy-worker hash key\x00" + hashKey))
	c.HashKey = sum[:]
	if len(e.errs) > 0 {
		return c, e.errs
	}
	return c, nil
}

// checkTogether checks the settings that are only wrong in combination.
func checkTogether(e *env, c *config) {
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		e.fail("NATS_TLS_CERT", c.NATSTLSCert, "NATS_TLS_CERT and NATS_TLS_KEY go together: set both or neither")
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		e.failSecret("NATS_NKEY", "set either NATS_CREDS or NATS_NKEY, not both")
	}
	// The client judges the base URL; placeholders stand in for missing
	// credentials, already reported above.
	key, secret := cmp.Or(c.APIKey, "unset"), cmp.Or(c.APISecret, "unset")
	if _, err := idenfy.NewClient(idenfy.Config{BaseURL: c.BaseURL, APIKey: key, APISecret: secret}); err != nil {
		// Not quoted: a URL may carry credentials; the client's reason
		// quotes it redacted where that helps.
		e.failSecret("IDENFY_BASE_URL", strings.TrimPrefix(err.Error(), "idenfy: "))
	}
	if c.H2C && !strings.HasPrefix(strings.ToLower(c.BaseURL), "http://") {
		e.fail("IDENFY_H2C", "true", "only for an http:// (simulator) base URL: https negotiates HTTP/2 by itself")
	}
}

// validateWorker applies the worker's own rules (worker.Config.Validate),
// naming the variable of each field it refuses; a variable that is already
// refused is not reported twice.
func validateWorker(e *env, c config) {
	err := c.workerConfig().Validate()
	if err == nil {
		return
	}
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	for _, err := range errs {
		var fe *worker.FieldError
		if !errors.As(err, &fe) {
			e.fail("worker.Config", "", err.Error())
			continue
		}
		name := "worker.Config." + fe.Field
		for _, v := range envVars {
			if v.field == fe.Field {
				name = v.name
			}
		}
		if !e.failed(name) {
			e.fail(name, "", fe.Err.Error())
		}
	}
}

// workerConfig is the worker.Config of c, without the dependencies (Conn,
// Client, Logger, Registerer) that serve adds.
func (c config) workerConfig() worker.Config {
	return worker.Config{
		HashKey:            c.HashKey,
		Prefix:             c.Prefix,
		Stream:             c.Stream,
		ResultsStream:      c.ResultsStream,
		ResultsMaxAge:      c.ResultsMaxAge,
		Bucket:             c.Bucket,
		Replicas:           c.Replicas,
		Concurrency:        c.Concurrency,
		RateLimit:          c.RateLimit,
		Breaker:            c.Breaker,
		BreakerProbe:       c.BreakerProbe,
		RetryMaxElapsed:    c.RetryMax,
		JobMaxAge:          c.JobMaxAge,
		ResultTTL:          c.ResultTTL,
		ShutdownTimeout:    c.Shutdown,
		AllowedCountries:   c.Countries,
		SendLimits:         c.SendLimits,
		BlockedNumberTypes: c.BlockedTypes,
		PumpingGuard:       c.PumpingGuard,
	}
}

// serverVars are variables of .env that docker-compose.yml gives the NATS
// server (the passwords of its users, see "Permissions" in README.md), not
// the worker: a worker that sees them in its environment (blanked) says
// nothing of them.
var serverVars = []string{"NATS_WORKER_PASSWORD", "NATS_CALLER_PASSWORD", "NATS_SANDBOX_WORKER_PASSWORD", "NATS_SANDBOX_CALLER_PASSWORD"}

// varPrefixes are the prefixes of the worker's variables. Others use them
// too (the nats CLI reads NATS_URL, NATS_CONTEXT...): an unknown one is
// worth a warning, never a refusal.
var varPrefixes = []string{"NATS_", "IDENFY_", "WORKER_", "METRICS_", "LOG_"}

// unknownVars returns a warning for each of names (variables of the
// environment) that has one of our prefixes but is not in the table,
// suggesting the closest variable when there is one: a misspelt
// WORKER_CONCURENCY would otherwise be ignored in silence.
func unknownVars(names []string) []string {
	var warnings []string
	for _, name := range slices.Sorted(slices.Values(names)) {
		if _, ok := lookupVar(name); ok || slices.Contains(serverVars, name) ||
			!slices.ContainsFunc(varPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		w := name + " is not a variable idenfy-worker reads (idenfy-worker help lists them)"
		if s := closestVar(name); s != "" {
			w = name + " is not a variable idenfy-worker reads: did you mean " + s + "?"
		}
		warnings = append(warnings, w)
	}
	return warnings
}

// closestVar is the variable of the table within two edits of name, if any.
func closestVar(name string) string {
	best, bestDist := "", 3
	for _, v := range envVars {
		if d := editDistance(name, v.name); d < bestDist {
			best, bestDist = v.name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// formatDuration writes d as a person would: 5m rather than 5m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func checkNATSURL(s string) error {
	if s == "" {
		return errors.New("empty server URL")
	}
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("scheme %q is not nats, tls, ws or wss", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}
