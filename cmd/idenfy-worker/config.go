package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
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
	Bucket         string
	Replicas       int
	Concurrency    int
	RateLimit      worker.RateLimit
	RetryMax       time.Duration
	JobMaxAge      time.Duration
	ResultTTL      time.Duration
	Shutdown       time.Duration
	Countries      []string
	SendLimits     []worker.SendLimit
	MetricsAddr    string
	Pprof          bool
	LogLevel       zerolog.Level
	LogFormat      string
}

// envVars lists every variable the worker reads, for documentation and for
// the test that checks docker-compose.yml against it.
var envVars = []string{
	"NATS_URL", "NATS_CREDS", "NATS_NKEY", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY",
	"IDENFY_API_KEY", "IDENFY_API_KEY_FILE", "IDENFY_API_SECRET", "IDENFY_API_SECRET_FILE",
	"IDENFY_BASE_URL", "IDENFY_TIMEOUT", "IDENFY_H2C",
	"WORKER_SUBJECT_PREFIX", "WORKER_STREAM", "WORKER_KV_BUCKET", "WORKER_REPLICAS",
	"WORKER_CONCURRENCY", "WORKER_RATE_LIMIT", "WORKER_RETRY_MAX_ELAPSED", "WORKER_JOB_MAX_AGE",
	"WORKER_RESULT_TTL", "WORKER_SHUTDOWN_TIMEOUT", "WORKER_ALLOWED_COUNTRIES", "WORKER_SEND_LIMITS",
	"WORKER_HASH_KEY", "WORKER_HASH_KEY_FILE",
	"METRICS_ADDR", "METRICS_PPROF", "LOG_LEVEL", "LOG_FORMAT",
}

// configError names the variable at fault; its text is the one line start-up
// prints. It never quotes a secret's value.
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

// env reads variables, remembering the first problem.
type env struct {
	lookup func(string) (string, bool)
	err    error
}

func (e *env) getenv(name string) string {
	v, _ := e.lookup(name)
	return v
}

func (e *env) fail(name, value, reason string) {
	if e.err == nil {
		e.err = &configError{name: name, value: value, reason: reason}
	}
}

func (e *env) failSecret(name, reason string) {
	if e.err == nil {
		e.err = &configError{name: name, secret: true, reason: reason}
	}
}

func (e *env) str(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}

func (e *env) duration(name string, def time.Duration) time.Duration {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.fail(name, v, "not a positive duration such as 10s, 5m or 1h")
		return def
	}
	return d
}

// boolean reads true/false (or 1/0), false when unset.
func (e *env) boolean(name string) bool {
	switch v := strings.ToLower(e.str(name, "false")); v {
	case "true", "1":
		return true
	case "false", "0":
		return false
	default:
		e.fail(name, v, "true or false")
		return false
	}
}

func (e *env) integer(name string, def, lo, hi int) int {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		e.fail(name, v, fmt.Sprintf("not a whole number from %d to %d", lo, hi))
		return def
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

// logLevels are the LOG_LEVEL names. zerolog.ParseLevel would also take
// numbers ("42" silences every log line) and levels the worker never uses.
var logLevels = map[string]zerolog.Level{
	"trace": zerolog.TraceLevel,
	"debug": zerolog.DebugLevel,
	"info":  zerolog.InfoLevel,
	"warn":  zerolog.WarnLevel,
	"error": zerolog.ErrorLevel,
}

var (
	streamNameRE = regexp.MustCompile(`^[^\s.*>/\\]{1,255}$`)
	bucketNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,200}$`)
)

// loadConfig reads the configuration through lookup (os.LookupEnv in
// production). The error names the first variable that is missing or
// malformed.
func loadConfig(lookup func(string) (string, bool)) (config, error) {
	e := &env{lookup: lookup}
	c := config{
		NATSURL:     e.str("NATS_URL", "nats://127.0.0.1:4222"),
		NATSCreds:   e.file("NATS_CREDS", true),
		NATSNKey:    e.file("NATS_NKEY", true),
		NATSTLSCA:   e.file("NATS_TLS_CA", false),
		NATSTLSCert: e.file("NATS_TLS_CERT", false),
		NATSTLSKey:  e.file("NATS_TLS_KEY", true),
		APIKey:      e.secret("IDENFY_API_KEY", true),
		APISecret:   e.secret("IDENFY_API_SECRET", true),
		BaseURL:     e.str("IDENFY_BASE_URL", idenfy.DefaultBaseURL),
		Timeout:     e.duration("IDENFY_TIMEOUT", idenfy.DefaultTimeout),
		Prefix:      e.str("WORKER_SUBJECT_PREFIX", messages.DefaultPrefix),
		Stream:      e.str("WORKER_STREAM", worker.DefaultStream),
		Bucket:      e.str("WORKER_KV_BUCKET", worker.DefaultBucket),
		Replicas:    e.integer("WORKER_REPLICAS", 1, 1, 5),
		Concurrency: e.integer("WORKER_CONCURRENCY", worker.DefaultConcurrency, 1, 100000),
		RetryMax:    e.duration("WORKER_RETRY_MAX_ELAPSED", worker.DefaultRetryMaxElapsed),
		JobMaxAge:   e.duration("WORKER_JOB_MAX_AGE", worker.DefaultJobMaxAge),
		ResultTTL:   e.duration("WORKER_RESULT_TTL", worker.DefaultResultTTL),
		Shutdown:    e.duration("WORKER_SHUTDOWN_TIMEOUT", worker.DefaultShutdownTimeout),
		MetricsAddr: ":9464",
		LogFormat:   e.str("LOG_FORMAT", "json"),
	}
	hashKey := e.secret("WORKER_HASH_KEY", false)

	for _, u := range strings.Split(c.NATSURL, ",") {
		if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
			// Quoted redacted: a URL may carry a user and password or a token.
			e.fail("NATS_URL", redactURLs(c.NATSURL), err.Error())
		}
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		e.fail("NATS_TLS_CERT", c.NATSTLSCert, "NATS_TLS_CERT and NATS_TLS_KEY go together: set both or neither")
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		e.failSecret("NATS_NKEY", "set either NATS_CREDS or NATS_NKEY, not both")
	}
	if e.err == nil {
		if _, err := idenfy.NewClient(idenfy.Config{BaseURL: c.BaseURL, APIKey: c.APIKey, APISecret: c.APISecret}); err != nil {
			// Not quoted: a URL may carry credentials; the client's reason
			// quotes it redacted where that helps.
			e.failSecret("IDENFY_BASE_URL", strings.TrimPrefix(err.Error(), "idenfy: "))
		}
	}
	if err := messages.ValidatePrefix(c.Prefix); err != nil {
		e.fail("WORKER_SUBJECT_PREFIX", c.Prefix, err.Error())
	}
	if !streamNameRE.MatchString(c.Stream) {
		e.fail("WORKER_STREAM", c.Stream, "a stream name may not contain whitespace, '.', '*', '>', '/' or '\\'")
	}
	if !bucketNameRE.MatchString(c.Bucket) {
		e.fail("WORKER_KV_BUCKET", c.Bucket, "a bucket name holds only letters, digits, '_' and '-'")
	}
	var err error
	if v := e.str("WORKER_RATE_LIMIT", ""); v != "" {
		if c.RateLimit, err = worker.ParseRateLimit(v); err != nil {
			e.fail("WORKER_RATE_LIMIT", v, err.Error())
		}
	}
	if v := e.str("WORKER_ALLOWED_COUNTRIES", ""); v != "" {
		if c.Countries, err = worker.ParseCountries(v); err != nil {
			e.fail("WORKER_ALLOWED_COUNTRIES", v, err.Error())
		}
	}
	c.SendLimits = worker.DefaultSendLimits
	if v := e.str("WORKER_SEND_LIMITS", ""); v != "" {
		if c.SendLimits, err = worker.ParseSendLimits(v); err != nil {
			e.fail("WORKER_SEND_LIMITS", v, err.Error())
		}
	}
	if v, ok := lookup("METRICS_ADDR"); ok {
		c.MetricsAddr = strings.TrimSpace(v)
		v = c.MetricsAddr
		if v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				e.fail("METRICS_ADDR", v, "not host:port (e.g. :9464), or empty to disable")
			}
		}
	}
	c.Pprof = e.boolean("METRICS_PPROF")
	c.H2C = e.boolean("IDENFY_H2C")
	if c.H2C && !strings.HasPrefix(strings.ToLower(c.BaseURL), "http://") {
		e.fail("IDENFY_H2C", "true", "only for an http:// (simulator) base URL: https negotiates HTTP/2 by itself")
	}
	level := e.str("LOG_LEVEL", "info")
	var ok bool
	if c.LogLevel, ok = logLevels[strings.ToLower(level)]; !ok {
		e.fail("LOG_LEVEL", level, "one of trace, debug, info, warn, error")
	}
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.LogFormat != "json" && c.LogFormat != "console" {
		e.fail("LOG_FORMAT", c.LogFormat, "json or console")
	}

	// Hashes of numbers and codes in JetStream are keyed by a secret so that
	// they cannot be reversed by trying every number.
	if hashKey == "" {
		c.HashKeyDerived = true
		hashKey = "idenfy-api-secret:" + c.APISecret
	}
	sum := sha256.Sum256([]byte("idenfy-worker hash key\x00" + hashKey))
	c.HashKey = sum[:]
	return c, e.err
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
