package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// Distinctive secrets, so that a leak into an error or a log line is found
// by a plain substring search.
const (
	testAPIKey    = "KEY-zq81Lm-do-not-print"
	testAPISecret = "SECRET-pv73Hd-do-not-print"
	testHashKey   = "HASH-w0Tn5c-do-not-print"
)

// unset in a test's environment removes a variable of the base environment.
const unset = "\x00unset"

// testEnv is the smallest valid environment (the two required secrets) with
// overrides applied.
func testEnv(overrides map[string]string) map[string]string {
	env := map[string]string{
		"IDENFY_API_KEY":    testAPIKey,
		"IDENFY_API_SECRET": testAPISecret,
	}
	for k, v := range overrides {
		if v == unset {
			delete(env, k)
			continue
		}
		env[k] = v
	}
	return env
}

// knownVar tells whether name is in the table of variables.
func knownVar(name string) bool {
	_, ok := lookupVar(name)
	return ok
}

// lookupFrom turns a map into an os.LookupEnv.
func lookupFrom(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// testFiles are files the configuration tables point variables at.
type testFiles struct {
	dir       string // a directory: not a file
	missing   string // a path that does not exist
	plain     string // any readable file
	plain2    string
	empty     string
	newline   string // only a line break: empty once it is dropped
	keyFile   string // "file-key\n"
	crlfFile  string // "file-secret\r\n"
	multiLine string // two lines
	hashFile  string // testHashKey + "\n"
}

func newTestFiles(t *testing.T) testFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return testFiles{
		dir:       dir,
		missing:   filepath.Join(dir, "missing"),
		plain:     write("plain", "contents\n"),
		plain2:    write("plain2", "contents\n"),
		empty:     write("empty", ""),
		newline:   write("newline", "\n"),
		keyFile:   write("key", "file-key\n"),
		crlfFile:  write("secret", "file-secret\r\n"),
		multiLine: write("multi", "line-one\nline-two\n"),
		hashFile:  write("hash", testHashKey+"\n"),
	}
}

// defaultConfig is what loadConfig returns for testEnv(nil), hash key aside.
func defaultConfig() config {
	return config{
		NATSURL:   "nats://127.0.0.1:4222",
		APIKey:    testAPIKey,
		APISecret: testAPISecret,
		BaseURL:   idenfy.DefaultBaseURL,
		Timeout:   10 * time.Second,
		Prefix:    "idenfy.phone",
		Stream:    "IDENFY_PHONE_JOBS",
		// Results are stored for a day.
		ResultsStream: "IDENFY_PHONE_RESULTS",
		ResultsMaxAge: 24 * time.Hour,
		Bucket:        "idenfy_phone",
		Replicas:      1,
		Concurrency:   64,
		RetryMax:      20 * time.Second,
		JobMaxAge:     5 * time.Minute,
		ResultTTL:     15 * time.Minute,
		Shutdown:      30 * time.Second,
		SendLimits:    []worker.SendLimit{{Count: 3, Window: 10 * time.Minute}, {Count: 10, Window: 24 * time.Hour}},
		// The contract's defaults, written out.
		BlockedTypes: []string{"premium_rate", "shared_cost", "uan", "pager", "voicemail"},
		Breaker:      worker.Breaker{N: 5, Window: 10 * time.Second},
		BreakerProbe: 5 * time.Second,
		PumpingGuard: worker.PumpingGuard{N: 20, Window: time.Hour},
		MetricsAddr:  ":9464",
		LogLevel:     zerolog.InfoLevel,
		LogFormat:    "json",
		// The hash key comes from the API secret unless WORKER_HASH_KEY is set.
		HashKeyDerived: true,
	}
}

var ignoreHashKey = cmpopts.IgnoreFields(config{}, "HashKey")

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(lookupFrom(testEnv(nil)))
	if err != nil {
		t.Fatalf("loadConfig(required only) = %v", err)
	}
	if diff := cmp.Diff(defaultConfig(), c, ignoreHashKey); diff != "" {
		t.Errorf("loadConfig(required only) mismatch (-want +got):\n%s", diff)
	}
	if len(c.HashKey) != 32 {
		t.Errorf("HashKey has %d bytes, want 32", len(c.HashKey))
	}
	// The defaults are the README's ("Configuration"), not only whatever
	// the packages happen to export.
	if idenfy.DefaultBaseURL != "https://ivs.idenfy.com" || messages.DefaultPrefix != "idenfy.phone" {
		t.Errorf("package defaults drifted from the README's Configuration: %s, %s", idenfy.DefaultBaseURL, messages.DefaultPrefix)
	}
}

type validConfigCase struct {
	name string
	env  map[string]string
	want func(*config) // applied to defaultConfig()
}

func validConfigCases(f testFiles) []validConfigCase {
	return []validConfigCase{
		{"NATS_URL list", map[string]string{"NATS_URL": "nats://a:4222,nats://b:4222"},
			func(c *config) { c.NATSURL = "nats://a:4222,nats://b:4222" }},
		{"NATS_URL without scheme, tls and ws", map[string]string{"NATS_URL": "a:4222, tls://b:4222,ws://c:8080,wss://d"},
			func(c *config) { c.NATSURL = "a:4222, tls://b:4222,ws://c:8080,wss://d" }},
		{"NATS_URL with user info", map[string]string{"NATS_URL": "nats://user:pw@a:4222"},
			func(c *config) { c.NATSURL = "nats://user:pw@a:4222" }},
		{"NATS_CREDS", map[string]string{"NATS_CREDS": f.plain},
			func(c *config) { c.NATSCreds = f.plain }},
		{"NATS_NKEY", map[string]string{"NATS_NKEY": f.plain},
			func(c *config) { c.NATSNKey = f.plain }},
		{"NATS_TLS_CA", map[string]string{"NATS_TLS_CA": f.plain},
			func(c *config) { c.NATSTLSCA = f.plain }},
		{"NATS_TLS_CERT and NATS_TLS_KEY", map[string]string{"NATS_TLS_CERT": f.plain, "NATS_TLS_KEY": f.plain2},
			func(c *config) { c.NATSTLSCert, c.NATSTLSKey = f.plain, f.plain2 }},
		{"IDENFY_API_KEY", map[string]string{"IDENFY_API_KEY": "another-key"},
			func(c *config) { c.APIKey = "another-key" }},
		{"IDENFY_API_KEY_FILE drops the trailing newline", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": f.keyFile},
			func(c *config) { c.APIKey = "file-key" }},
		{"IDENFY_API_SECRET", map[string]string{"IDENFY_API_SECRET": "another-secret"},
			func(c *config) { c.APISecret = "another-secret" }},
		{"IDENFY_API_SECRET_FILE drops a trailing CRLF", map[string]string{"IDENFY_API_SECRET": unset, "IDENFY_API_SECRET_FILE": f.crlfFile},
			func(c *config) { c.APISecret = "file-secret" }},
		{"IDENFY_API_KEY empty with IDENFY_API_KEY_FILE", map[string]string{"IDENFY_API_KEY": "", "IDENFY_API_KEY_FILE": f.keyFile},
			func(c *config) { c.APIKey = "file-key" }},
		{"IDENFY_BASE_URL http on 127.0.0.1", map[string]string{"IDENFY_BASE_URL": "http://127.0.0.1:8089"},
			func(c *config) { c.BaseURL = "http://127.0.0.1:8089" }},
		{"IDENFY_BASE_URL http on localhost", map[string]string{"IDENFY_BASE_URL": "http://localhost:8089"},
			func(c *config) { c.BaseURL = "http://localhost:8089" }},
		{"IDENFY_BASE_URL http on ::1", map[string]string{"IDENFY_BASE_URL": "http://[::1]:8089"},
			func(c *config) { c.BaseURL = "http://[::1]:8089" }},
		{"IDENFY_BASE_URL https with a path", map[string]string{"IDENFY_BASE_URL": "https://proxy.example.com/idenfy/"},
			func(c *config) { c.BaseURL = "https://proxy.example.com/idenfy/" }},
		{"IDENFY_H2C", map[string]string{"IDENFY_H2C": "true", "IDENFY_BASE_URL": "http://127.0.0.1:8089"},
			func(c *config) { c.H2C, c.BaseURL = true, "http://127.0.0.1:8089" }},
		{"IDENFY_TIMEOUT", map[string]string{"IDENFY_TIMEOUT": "3s"},
			func(c *config) { c.Timeout = 3 * time.Second }},
		{"IDENFY_TIMEOUT trimmed", map[string]string{"IDENFY_TIMEOUT": " 1m30s\n"},
			func(c *config) { c.Timeout = 90 * time.Second }},
		{"WORKER_SUBJECT_PREFIX", map[string]string{"WORKER_SUBJECT_PREFIX": "acme.sms-verify"},
			func(c *config) { c.Prefix = "acme.sms-verify" }},
		{"WORKER_SUBJECT_PREFIX one token", map[string]string{"WORKER_SUBJECT_PREFIX": "phones"},
			func(c *config) { c.Prefix = "phones" }},
		{"WORKER_STREAM", map[string]string{"WORKER_STREAM": "ACME_JOBS-2"},
			func(c *config) { c.Stream = "ACME_JOBS-2" }},
		{"WORKER_KV_BUCKET", map[string]string{"WORKER_KV_BUCKET": "acme-phone_2"},
			func(c *config) { c.Bucket = "acme-phone_2" }},
		{"WORKER_REPLICAS 3", map[string]string{"WORKER_REPLICAS": "3"},
			func(c *config) { c.Replicas = 3 }},
		{"WORKER_REPLICAS 5", map[string]string{"WORKER_REPLICAS": "5"},
			func(c *config) { c.Replicas = 5 }},
		{"WORKER_CONCURRENCY", map[string]string{"WORKER_CONCURRENCY": "8"},
			func(c *config) { c.Concurrency = 8 }},
		{"WORKER_RATE_LIMIT 10000/1h", map[string]string{"WORKER_RATE_LIMIT": "10000/1h"},
			func(c *config) { c.RateLimit = worker.RateLimit{N: 10000, Per: time.Hour} }},
		{"WORKER_RATE_LIMIT 10/s", map[string]string{"WORKER_RATE_LIMIT": "10/s"},
			func(c *config) { c.RateLimit = worker.RateLimit{N: 10, Per: time.Second} }},
		{"WORKER_RATE_LIMIT 5/1d", map[string]string{"WORKER_RATE_LIMIT": "5/1d"},
			func(c *config) { c.RateLimit = worker.RateLimit{N: 5, Per: 24 * time.Hour} }},
		{"WORKER_RATE_LIMIT empty is no limit", map[string]string{"WORKER_RATE_LIMIT": ""},
			func(*config) {}},
		{"WORKER_RETRY_MAX_ELAPSED", map[string]string{"WORKER_RETRY_MAX_ELAPSED": "1m"},
			func(c *config) { c.RetryMax = time.Minute }},
		{"WORKER_JOB_MAX_AGE", map[string]string{"WORKER_JOB_MAX_AGE": "90s"},
			func(c *config) { c.JobMaxAge = 90 * time.Second }},
		{"WORKER_RESULT_TTL", map[string]string{"WORKER_RESULT_TTL": "1h"},
			func(c *config) { c.ResultTTL = time.Hour }},
		{"WORKER_SHUTDOWN_TIMEOUT", map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "45s"},
			func(c *config) { c.Shutdown = 45 * time.Second }},
		{"WORKER_ALLOWED_COUNTRIES", map[string]string{"WORKER_ALLOWED_COUNTRIES": "us, GB,LT"},
			func(c *config) { c.Countries = []string{"US", "GB", "LT"} }},
		{"WORKER_ALLOWED_COUNTRIES duplicates", map[string]string{"WORKER_ALLOWED_COUNTRIES": "US,us"},
			func(c *config) { c.Countries = []string{"US"} }},
		{"WORKER_SEND_LIMITS off", map[string]string{"WORKER_SEND_LIMITS": "off"},
			func(c *config) { c.SendLimits = nil }},
		{"WORKER_SEND_LIMITS 5/1h", map[string]string{"WORKER_SEND_LIMITS": "5/1h"},
			func(c *config) { c.SendLimits = []worker.SendLimit{{Count: 5, Window: time.Hour}} }},
		{"WORKER_SEND_LIMITS two", map[string]string{"WORKER_SEND_LIMITS": "2/1m, 20/7d"},
			func(c *config) {
				c.SendLimits = []worker.SendLimit{{Count: 2, Window: time.Minute}, {Count: 20, Window: 7 * 24 * time.Hour}}
			}},
		{"WORKER_RESULTS_STREAM off", map[string]string{"WORKER_RESULTS_STREAM": "off"},
			func(c *config) { c.ResultsStream = "off" }},
		{"WORKER_RESULTS_MAX_AGE 7d", map[string]string{"WORKER_RESULTS_MAX_AGE": "168h"},
			func(c *config) { c.ResultsMaxAge = 7 * 24 * time.Hour }},
		{"WORKER_BREAKER off", map[string]string{"WORKER_BREAKER": "off"},
			func(c *config) { c.Breaker = worker.Breaker{Off: true} }},
		{"WORKER_BREAKER 3/30s", map[string]string{"WORKER_BREAKER": "3/30s"},
			func(c *config) { c.Breaker = worker.Breaker{N: 3, Window: 30 * time.Second} }},
		{"WORKER_BREAKER_PROBE 2s", map[string]string{"WORKER_BREAKER_PROBE": "2s"},
			func(c *config) { c.BreakerProbe = 2 * time.Second }},
		{"WORKER_BLOCKED_NUMBER_TYPES none", map[string]string{"WORKER_BLOCKED_NUMBER_TYPES": "none"},
			func(c *config) { c.BlockedTypes = nil }},
		{"WORKER_BLOCKED_NUMBER_TYPES with unknown", map[string]string{"WORKER_BLOCKED_NUMBER_TYPES": "Premium_Rate, unknown"},
			func(c *config) { c.BlockedTypes = []string{"premium_rate", "unknown"} }},
		{"WORKER_PUMPING_GUARD off", map[string]string{"WORKER_PUMPING_GUARD": "off"},
			func(c *config) { c.PumpingGuard = worker.PumpingGuard{} }},
		{"WORKER_PUMPING_GUARD 50/2h", map[string]string{"WORKER_PUMPING_GUARD": "50/2h"},
			func(c *config) { c.PumpingGuard = worker.PumpingGuard{N: 50, Window: 2 * time.Hour} }},
		{"WORKER_HASH_KEY", map[string]string{"WORKER_HASH_KEY": testHashKey},
			func(c *config) { c.HashKeyDerived = false }},
		{"WORKER_HASH_KEY_FILE", map[string]string{"WORKER_HASH_KEY_FILE": f.hashFile},
			func(c *config) { c.HashKeyDerived = false }},
		{"METRICS_ADDR", map[string]string{"METRICS_ADDR": "127.0.0.1:9000"},
			func(c *config) { c.MetricsAddr = "127.0.0.1:9000" }},
		{"METRICS_ADDR set but empty disables", map[string]string{"METRICS_ADDR": ""},
			func(c *config) { c.MetricsAddr = "" }},
		{"METRICS_ADDR blank disables", map[string]string{"METRICS_ADDR": "  "},
			func(c *config) { c.MetricsAddr = "" }},
		{"METRICS_PPROF", map[string]string{"METRICS_PPROF": "true"},
			func(c *config) { c.Pprof = true }},
		{"METRICS_PPROF off", map[string]string{"METRICS_PPROF": "0"},
			func(c *config) { c.Pprof = false }},
		{"LOG_LEVEL debug", map[string]string{"LOG_LEVEL": "debug"},
			func(c *config) { c.LogLevel = zerolog.DebugLevel }},
		{"LOG_LEVEL WARN", map[string]string{"LOG_LEVEL": "WARN"},
			func(c *config) { c.LogLevel = zerolog.WarnLevel }},
		{"LOG_LEVEL trace", map[string]string{"LOG_LEVEL": "trace"},
			func(c *config) { c.LogLevel = zerolog.TraceLevel }},
		{"LOG_LEVEL error", map[string]string{"LOG_LEVEL": "error"},
			func(c *config) { c.LogLevel = zerolog.ErrorLevel }},
		{"LOG_FORMAT console", map[string]string{"LOG_FORMAT": "console"},
			func(c *config) { c.LogFormat = "console" }},
		{"LOG_FORMAT json", map[string]string{"LOG_FORMAT": "json"},
			func(*config) {}},
	}
}

func TestLoadConfigValid(t *testing.T) {
	for _, tc := range validConfigCases(newTestFiles(t)) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadConfig(lookupFrom(testEnv(tc.env)))
			if err != nil {
				t.Fatalf("loadConfig(%q) = %v, want no error", tc.env, err)
			}
			want := defaultConfig()
			tc.want(&want)
			if diff := cmp.Diff(want, got, ignoreHashKey); diff != "" {
				t.Errorf("loadConfig(%q) mismatch (-want +got):\n%s", tc.env, diff)
			}
		})
	}
}

type invalidConfigCase struct {
	name    string
	env     map[string]string
	wantVar string // the variable the error names
	wantIn  string // part of the reason, so that the right check refused it
}

func invalidConfigCases(f testFiles) []invalidConfigCase {
	return []invalidConfigCase{
		{"IDENFY_API_KEY missing", map[string]string{"IDENFY_API_KEY": unset}, "IDENFY_API_KEY", "required"},
		{"IDENFY_API_KEY empty", map[string]string{"IDENFY_API_KEY": ""}, "IDENFY_API_KEY", "required"},
		{"IDENFY_API_KEY blank", map[string]string{"IDENFY_API_KEY": "  "}, "IDENFY_API_KEY", "required"},
		{"IDENFY_API_KEY line break", map[string]string{"IDENFY_API_KEY": "a\nb"}, "IDENFY_API_KEY", "line break"},
		{"IDENFY_API_KEY and its file", map[string]string{"IDENFY_API_KEY_FILE": f.keyFile}, "IDENFY_API_KEY", "not both"},
		{"IDENFY_API_KEY_FILE missing", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": f.missing}, "IDENFY_API_KEY_FILE", "cannot read"},
		{"IDENFY_API_KEY_FILE a directory", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": f.dir}, "IDENFY_API_KEY_FILE", "cannot read"},
		{"IDENFY_API_KEY_FILE empty", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": f.empty}, "IDENFY_API_KEY_FILE", "empty"},
		{"IDENFY_API_KEY_FILE only a newline", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": f.newline}, "IDENFY_API_KEY_FILE", "empty"},
		{"IDENFY_API_KEY_FILE two lines", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": f.multiLine}, "IDENFY_API_KEY", "line break"},
		{"IDENFY_API_SECRET missing", map[string]string{"IDENFY_API_SECRET": unset}, "IDENFY_API_SECRET", "required"},
		{"IDENFY_API_SECRET line break", map[string]string{"IDENFY_API_SECRET": "a\r\nb"}, "IDENFY_API_SECRET", "line break"},
		{"IDENFY_API_SECRET and its file", map[string]string{"IDENFY_API_SECRET_FILE": f.crlfFile}, "IDENFY_API_SECRET", "not both"},
		{"IDENFY_API_SECRET_FILE missing", map[string]string{"IDENFY_API_SECRET": unset, "IDENFY_API_SECRET_FILE": f.missing}, "IDENFY_API_SECRET_FILE", "cannot read"},
		{"IDENFY_API_SECRET_FILE empty", map[string]string{"IDENFY_API_SECRET": unset, "IDENFY_API_SECRET_FILE": f.empty}, "IDENFY_API_SECRET_FILE", "empty"},
		{"IDENFY_API_SECRET_FILE two lines", map[string]string{"IDENFY_API_SECRET": unset, "IDENFY_API_SECRET_FILE": f.multiLine}, "IDENFY_API_SECRET", "line break"},
		{"WORKER_HASH_KEY and its file", map[string]string{"WORKER_HASH_KEY": testHashKey, "WORKER_HASH_KEY_FILE": f.hashFile}, "WORKER_HASH_KEY", "not both"},
		{"WORKER_HASH_KEY line break", map[string]string{"WORKER_HASH_KEY": "a\nb"}, "WORKER_HASH_KEY", "line break"},
		{"WORKER_HASH_KEY_FILE missing", map[string]string{"WORKER_HASH_KEY_FILE": f.missing}, "WORKER_HASH_KEY_FILE", "cannot read"},
		{"WORKER_HASH_KEY_FILE empty", map[string]string{"WORKER_HASH_KEY_FILE": f.empty}, "WORKER_HASH_KEY_FILE", "empty"},
		{"IDENFY_BASE_URL insecure", map[string]string{"IDENFY_BASE_URL": "http://example.com"}, "IDENFY_BASE_URL", "https"},
		{"IDENFY_BASE_URL garbage", map[string]string{"IDENFY_BASE_URL": "garbage"}, "IDENFY_BASE_URL", "not an absolute URL"},
		{"IDENFY_BASE_URL ftp", map[string]string{"IDENFY_BASE_URL": "ftp://ivs.idenfy.com"}, "IDENFY_BASE_URL", "not https"},
		{"IDENFY_BASE_URL with credentials", map[string]string{"IDENFY_BASE_URL": "https://u:p@ivs.idenfy.com"}, "IDENFY_BASE_URL", "credentials"},
		{"IDENFY_H2C with https", map[string]string{"IDENFY_H2C": "true"}, "IDENFY_H2C", "http://"},
		{"IDENFY_H2C maybe", map[string]string{"IDENFY_H2C": "maybe"}, "IDENFY_H2C", "true or false"},
		{"IDENFY_TIMEOUT abc", map[string]string{"IDENFY_TIMEOUT": "abc"}, "IDENFY_TIMEOUT", "positive duration"},
		{"IDENFY_TIMEOUT 0", map[string]string{"IDENFY_TIMEOUT": "0"}, "IDENFY_TIMEOUT", "positive duration"},
		{"IDENFY_TIMEOUT -1s", map[string]string{"IDENFY_TIMEOUT": "-1s"}, "IDENFY_TIMEOUT", "positive duration"},
		{"IDENFY_TIMEOUT without unit", map[string]string{"IDENFY_TIMEOUT": "10"}, "IDENFY_TIMEOUT", "positive duration"},
		{"WORKER_SUBJECT_PREFIX wildcard *", map[string]string{"WORKER_SUBJECT_PREFIX": "idenfy.*"}, "WORKER_SUBJECT_PREFIX", "wildcards"},
		{"WORKER_SUBJECT_PREFIX wildcard >", map[string]string{"WORKER_SUBJECT_PREFIX": "idenfy.>"}, "WORKER_SUBJECT_PREFIX", "wildcards"},
		{"WORKER_SUBJECT_PREFIX space", map[string]string{"WORKER_SUBJECT_PREFIX": "idenfy phone"}, "WORKER_SUBJECT_PREFIX", "whitespace"},
		{"WORKER_SUBJECT_PREFIX empty token", map[string]string{"WORKER_SUBJECT_PREFIX": "idenfy..phone"}, "WORKER_SUBJECT_PREFIX", "empty token"},
		{"WORKER_SUBJECT_PREFIX trailing dot", map[string]string{"WORKER_SUBJECT_PREFIX": "idenfy.phone."}, "WORKER_SUBJECT_PREFIX", "empty token"},
		{"WORKER_STREAM with a dot", map[string]string{"WORKER_STREAM": "IDENFY.JOBS"}, "WORKER_STREAM", "'.'"},
		{"WORKER_STREAM with a space", map[string]string{"WORKER_STREAM": "IDENFY JOBS"}, "WORKER_STREAM", "whitespace"},
		{"WORKER_STREAM with a wildcard", map[string]string{"WORKER_STREAM": "JOBS*"}, "WORKER_STREAM", "'*'"},
		{"WORKER_KV_BUCKET with a dot", map[string]string{"WORKER_KV_BUCKET": "idenfy.phone"}, "WORKER_KV_BUCKET", "letters, digits"},
		{"WORKER_REPLICAS 0", map[string]string{"WORKER_REPLICAS": "0"}, "WORKER_REPLICAS", "positive whole number"},
		{"WORKER_REPLICAS 6", map[string]string{"WORKER_REPLICAS": "6"}, "WORKER_REPLICAS", "between 1 and 5"},
		{"WORKER_REPLICAS x", map[string]string{"WORKER_REPLICAS": "x"}, "WORKER_REPLICAS", "whole number"},
		{"WORKER_CONCURRENCY 0", map[string]string{"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY", "whole number"},
		{"WORKER_CONCURRENCY abc", map[string]string{"WORKER_CONCURRENCY": "abc"}, "WORKER_CONCURRENCY", "whole number"},
		{"WORKER_CONCURRENCY negative", map[string]string{"WORKER_CONCURRENCY": "-4"}, "WORKER_CONCURRENCY", "whole number"},
		{"WORKER_RATE_LIMIT without window", map[string]string{"WORKER_RATE_LIMIT": "10"}, "WORKER_RATE_LIMIT", "COUNT/DURATION"},
		{"WORKER_RATE_LIMIT zero count", map[string]string{"WORKER_RATE_LIMIT": "0/1h"}, "WORKER_RATE_LIMIT", "positive whole number"},
		{"WORKER_RATE_LIMIT not a count", map[string]string{"WORKER_RATE_LIMIT": "x/1h"}, "WORKER_RATE_LIMIT", "positive whole number"},
		{"WORKER_RATE_LIMIT zero window", map[string]string{"WORKER_RATE_LIMIT": "10/0s"}, "WORKER_RATE_LIMIT", "at least 1s"},
		{"WORKER_RATE_LIMIT bad unit", map[string]string{"WORKER_RATE_LIMIT": "10/1x"}, "WORKER_RATE_LIMIT", "at least 1s"},
		{"WORKER_RETRY_MAX_ELAPSED", map[string]string{"WORKER_RETRY_MAX_ELAPSED": "soon"}, "WORKER_RETRY_MAX_ELAPSED", "positive duration"},
		{"WORKER_JOB_MAX_AGE", map[string]string{"WORKER_JOB_MAX_AGE": "0s"}, "WORKER_JOB_MAX_AGE", "positive duration"},
		{"WORKER_RESULT_TTL", map[string]string{"WORKER_RESULT_TTL": "-15m"}, "WORKER_RESULT_TTL", "positive duration"},
		{"WORKER_SHUTDOWN_TIMEOUT", map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "30"}, "WORKER_SHUTDOWN_TIMEOUT", "positive duration"},
		{"WORKER_ALLOWED_COUNTRIES XX", map[string]string{"WORKER_ALLOWED_COUNTRIES": "XX"}, "WORKER_ALLOWED_COUNTRIES", `"XX"`},
		{"WORKER_ALLOWED_COUNTRIES alpha-3", map[string]string{"WORKER_ALLOWED_COUNTRIES": "US,GBR"}, "WORKER_ALLOWED_COUNTRIES", `"GBR"`},
		{"WORKER_ALLOWED_COUNTRIES empty entry", map[string]string{"WORKER_ALLOWED_COUNTRIES": "US,,GB"}, "WORKER_ALLOWED_COUNTRIES", "alpha-2"},
		{"WORKER_SEND_LIMITS without window", map[string]string{"WORKER_SEND_LIMITS": "3"}, "WORKER_SEND_LIMITS", "COUNT/DURATION"},
		{"WORKER_SEND_LIMITS zero", map[string]string{"WORKER_SEND_LIMITS": "0/10m"}, "WORKER_SEND_LIMITS", "positive whole number"},
		{"WORKER_SEND_LIMITS second bad", map[string]string{"WORKER_SEND_LIMITS": "3/10m,x"}, "WORKER_SEND_LIMITS", "COUNT/DURATION"},
		{"WORKER_RESULTS_STREAM with a dot", map[string]string{"WORKER_RESULTS_STREAM": "a.b"}, "WORKER_RESULTS_STREAM", "not a stream name"},
		{"WORKER_RESULTS_STREAM the jobs stream", map[string]string{"WORKER_RESULTS_STREAM": "IDENFY_PHONE_JOBS"}, "WORKER_RESULTS_STREAM", "jobs stream"},
		{"WORKER_RESULTS_MAX_AGE too short", map[string]string{"WORKER_RESULTS_MAX_AGE": "30s"}, "WORKER_RESULTS_MAX_AGE", "1m"},
		{"WORKER_BREAKER without window", map[string]string{"WORKER_BREAKER": "5"}, "WORKER_BREAKER", "COUNT/DURATION"},
		{"WORKER_BREAKER_PROBE too short", map[string]string{"WORKER_BREAKER_PROBE": "100ms"}, "WORKER_BREAKER_PROBE", "1s"},
		{"WORKER_BLOCKED_NUMBER_TYPES misspelt", map[string]string{"WORKER_BLOCKED_NUMBER_TYPES": "premium"}, "WORKER_BLOCKED_NUMBER_TYPES", "not a number type"},
		{"WORKER_PUMPING_GUARD without window", map[string]string{"WORKER_PUMPING_GUARD": "20"}, "WORKER_PUMPING_GUARD", "COUNT/DURATION"},
		{"WORKER_PUMPING_GUARD too large", map[string]string{"WORKER_PUMPING_GUARD": "5000/1h"}, "WORKER_PUMPING_GUARD", "1000"},
		{"METRICS_ADDR nonsense", map[string]string{"METRICS_ADDR": "nonsense"}, "METRICS_ADDR", "host:port"},
		{"METRICS_PPROF yes", map[string]string{"METRICS_PPROF": "yes"}, "METRICS_PPROF", "true or false"},
		{"LOG_LEVEL verbose", map[string]string{"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "one of"},
		{"LOG_LEVEL a number", map[string]string{"LOG_LEVEL": "42"}, "LOG_LEVEL", "one of"},
		{"LOG_FORMAT text", map[string]string{"LOG_FORMAT": "text"}, "LOG_FORMAT", "json or console"},
		{"NATS_URL http", map[string]string{"NATS_URL": "http://a:4222"}, "NATS_URL", `scheme "http"`},
		{"NATS_URL second entry bad", map[string]string{"NATS_URL": "nats://a:4222,ftp://b:4222"}, "NATS_URL", `scheme "ftp"`},
		{"NATS_URL trailing comma", map[string]string{"NATS_URL": "nats://a:4222,"}, "NATS_URL", "empty server URL"},
		{"NATS_URL no host", map[string]string{"NATS_URL": "nats://"}, "NATS_URL", "no host"},
		{"NATS_CREDS missing file", map[string]string{"NATS_CREDS": f.missing}, "NATS_CREDS", "cannot read"},
		{"NATS_CREDS a directory", map[string]string{"NATS_CREDS": f.dir}, "NATS_CREDS", "directory"},
		{"NATS_NKEY missing file", map[string]string{"NATS_NKEY": f.missing}, "NATS_NKEY", "cannot read"},
		{"NATS_TLS_CA missing file", map[string]string{"NATS_TLS_CA": f.missing}, "NATS_TLS_CA", "cannot read"},
		{"NATS_TLS_CERT missing file", map[string]string{"NATS_TLS_CERT": f.missing, "NATS_TLS_KEY": f.plain}, "NATS_TLS_CERT", "cannot read"},
		{"NATS_TLS_KEY missing file", map[string]string{"NATS_TLS_CERT": f.plain, "NATS_TLS_KEY": f.missing}, "NATS_TLS_KEY", "cannot read"},
		{"NATS_TLS_CERT without NATS_TLS_KEY", map[string]string{"NATS_TLS_CERT": f.plain}, "NATS_TLS_CERT", "NATS_TLS_KEY"},
		{"NATS_TLS_KEY without NATS_TLS_CERT", map[string]string{"NATS_TLS_KEY": f.plain}, "NATS_TLS_CERT", "NATS_TLS_KEY"},
		{"NATS_CREDS and NATS_NKEY", map[string]string{"NATS_CREDS": f.plain, "NATS_NKEY": f.plain2}, "NATS_NKEY", "NATS_CREDS"},
	}
}

// checkConfigError checks that err is the one line naming name that
// start-up prints.
func checkConfigError(t *testing.T, err error, name, wantIn string) {
	t.Helper()
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *configError", err, err)
	}
	if ce.name != name {
		t.Errorf("error %q names %s, want %s", err, ce.name, name)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "config: "+name+":") && !strings.HasPrefix(msg, "config: "+name+"=") {
		t.Errorf("error %q does not start with %q", msg, "config: "+name)
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error %q is not one line", msg)
	}
	if !strings.Contains(msg, wantIn) {
		t.Errorf("error %q does not say %q", msg, wantIn)
	}
}

func TestLoadConfigInvalid(t *testing.T) {
	for _, tc := range invalidConfigCases(newTestFiles(t)) {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(lookupFrom(testEnv(tc.env)))
			if err == nil {
				t.Fatalf("loadConfig(%q) = nil error, want one naming %s", tc.env, tc.wantVar)
			}
			checkConfigError(t, err, tc.wantVar, tc.wantIn)
		})
	}
}

// TestConfigTablesCoverEveryVariable keeps the tables above honest: every
// variable the worker reads has a valid value and a rejected one.
func TestConfigTablesCoverEveryVariable(t *testing.T) {
	f := newTestFiles(t)
	valid := map[string]bool{}
	for _, tc := range validConfigCases(f) {
		for name, v := range tc.env {
			if v != unset {
				valid[name] = true
			}
		}
	}
	invalid := map[string]bool{}
	for _, tc := range invalidConfigCases(f) {
		invalid[tc.wantVar] = true
	}
	for _, v := range envVars {
		name := v.name
		if !valid[name] {
			t.Errorf("no valid case sets %s", name)
		}
		if !invalid[name] {
			t.Errorf("no invalid case is refused naming %s", name)
		}
	}
	for name := range valid {
		if !knownVar(name) {
			t.Errorf("the tests set %s, which envVars does not list", name)
		}
	}
}

// TestConfigErrorsNeverQuoteSecrets feeds distinctive secrets into every
// error path, including the mistakes that put a secret where a path or a
// URL belongs, and checks that no error text holds one.
func TestConfigErrorsNeverQuoteSecrets(t *testing.T) {
	f := newTestFiles(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testAPISecret+"\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		natsPassword = "NATSPW-r4Ue8s-do-not-print"
		natsToken    = "NATSTOKEN-k2Jd0x-do-not-print"
		nkeySeed     = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
		pemKey       = "-----BEGIN PRIVATE KEY-----\nPEMBODY-h8Qa1v-do-not-print\n-----END PRIVATE KEY-----"
	)
	secrets := []string{testAPIKey, testAPISecret, testHashKey, natsPassword, natsToken, nkeySeed, "PEMBODY-h8Qa1v"}
	// Every secret env of the base environment, so that every refusal
	// below happens with secrets around.
	withSecrets := func(overrides map[string]string) map[string]string {
		env := testEnv(map[string]string{"WORKER_HASH_KEY": testHashKey})
		for k, v := range overrides {
			if v == unset {
				delete(env, k)
				continue
			}
			env[k] = v
		}
		return env
	}

	type leakCase struct {
		name string
		env  map[string]string
	}
	cases := []leakCase{
		{"secret with a line break", map[string]string{"IDENFY_API_SECRET": testAPISecret + "\nmore"}},
		{"key with a line break", map[string]string{"IDENFY_API_KEY": "\n" + testAPIKey}},
		{"hash key with a line break", map[string]string{"WORKER_HASH_KEY": testHashKey + "\r\n" + testHashKey}},
		{"secret and its file", map[string]string{"IDENFY_API_SECRET_FILE": secretFile}},
		{"secret file with two lines", map[string]string{"IDENFY_API_SECRET": unset, "IDENFY_API_SECRET_FILE": secretFile}},
		{"hash key file with two lines", map[string]string{"WORKER_HASH_KEY": unset, "WORKER_HASH_KEY_FILE": secretFile}},
		{"secret put in its _FILE variable", map[string]string{"IDENFY_API_SECRET": unset, "IDENFY_API_SECRET_FILE": testAPISecret}},
		{"key put in its _FILE variable", map[string]string{"IDENFY_API_KEY": unset, "IDENFY_API_KEY_FILE": testAPIKey}},
		{"hash key put in its _FILE variable", map[string]string{"WORKER_HASH_KEY": unset, "WORKER_HASH_KEY_FILE": testHashKey}},
		{"base URL with credentials", map[string]string{"IDENFY_BASE_URL": "https://" + testAPIKey + ":" + testAPISecret + "@ivs.idenfy.com"}},
		{"insecure base URL with credentials", map[string]string{"IDENFY_BASE_URL": "http://" + testAPIKey + ":" + testAPISecret + "@example.com"}},
		{"base URL garbage with a secret", map[string]string{"IDENFY_BASE_URL": "::" + testAPISecret}},
		{"base URL with a secret in the query", map[string]string{"IDENFY_BASE_URL": "https://ivs.idenfy.com/?key=" + testAPISecret}},
		{"base URL with a bad scheme and credentials", map[string]string{"IDENFY_BASE_URL": "ftp://u:" + testAPISecret + "@ivs.idenfy.com"}},
		{"NATS_URL with a password beside a bad entry", map[string]string{"NATS_URL": "nats://user:" + natsPassword + "@a:4222,http://b:4222"}},
		{"NATS_URL with a token beside a bad entry", map[string]string{"NATS_URL": "nats://" + natsToken + "@a:4222,"}},
		{"NATS_URL without scheme with a password", map[string]string{"NATS_URL": "user:" + natsPassword + "@a:4222,ftp://b"}},
		{"NATS_URL unparseable with a password", map[string]string{"NATS_URL": "nats://user:" + natsPassword + "%zz@a:4222"}},
		{"NATS_URL bad scheme with a password", map[string]string{"NATS_URL": "http://user:" + natsPassword + "@a:4222"}},
		{"nkey seed put in NATS_NKEY", map[string]string{"NATS_NKEY": nkeySeed}},
		{"token put in NATS_CREDS", map[string]string{"NATS_CREDS": natsToken}},
		{"PEM put in NATS_TLS_KEY", map[string]string{"NATS_TLS_CERT": f.plain, "NATS_TLS_KEY": pemKey}},
		{"nkey seed beside NATS_CREDS", map[string]string{"NATS_CREDS": f.plain, "NATS_NKEY": f.plain2}},
	}
	for _, tc := range invalidConfigCases(f) {
		cases = append(cases, leakCase{"table: " + tc.name, tc.env})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(lookupFrom(withSecrets(tc.env)))
			if err == nil {
				t.Fatalf("loadConfig(%s) = nil error, want one", tc.name)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q holds the secret %q", err, s)
				}
			}
			var ces configErrors
			if !errors.As(err, &ces) {
				t.Fatalf("error %v (%T), want configErrors", err, err)
			}
			for _, ce := range ces {
				if strings.ContainsAny(ce.Error(), "\r\n") {
					t.Errorf("error %q is not one line", ce)
				}
			}
		})
	}
}

func TestConfigErrorQuotesOrdinaryValues(t *testing.T) {
	_, err := loadConfig(lookupFrom(testEnv(map[string]string{"WORKER_STREAM": "A.B\nC"})))
	want := `config: WORKER_STREAM="A.B\nC": a stream name may not contain whitespace, '.', '*', '>', '/' or '\'`
	if err == nil || err.Error() != want {
		t.Errorf("loadConfig(WORKER_STREAM=\"A.B\\nC\") = %v, want %s", err, want)
	}
}

func TestLoadConfigHashKey(t *testing.T) {
	f := newTestFiles(t)
	hashKey := func(env map[string]string) []byte {
		t.Helper()
		c, err := loadConfig(lookupFrom(testEnv(env)))
		if err != nil {
			t.Fatalf("loadConfig(%q) = %v", env, err)
		}
		return c.HashKey
	}
	derived := hashKey(nil)
	set := hashKey(map[string]string{"WORKER_HASH_KEY": testHashKey})

	if !bytes.Equal(derived, hashKey(nil)) {
		t.Error("the derived hash key differs between two loads of the same environment")
	}
	if !bytes.Equal(set, hashKey(map[string]string{"WORKER_HASH_KEY": testHashKey})) {
		t.Error("the WORKER_HASH_KEY hash key differs between two loads of the same environment")
	}
	if bytes.Equal(derived, set) {
		t.Error("the hash key is the same with WORKER_HASH_KEY set as derived from the API secret")
	}
	if !bytes.Equal(set, hashKey(map[string]string{"WORKER_HASH_KEY_FILE": f.hashFile})) {
		t.Error("WORKER_HASH_KEY_FILE holding the same key gives another hash key than WORKER_HASH_KEY")
	}
	if bytes.Equal(derived, hashKey(map[string]string{"IDENFY_API_SECRET": testAPISecret + "-rotated"})) {
		t.Error("the derived hash key does not depend on the API secret")
	}
	if !bytes.Equal(set, hashKey(map[string]string{"WORKER_HASH_KEY": testHashKey, "IDENFY_API_SECRET": "other"})) {
		t.Error("with WORKER_HASH_KEY set, the hash key still depends on the API secret")
	}
	if bytes.Equal(set, hashKey(map[string]string{"WORKER_HASH_KEY": testHashKey + "2"})) {
		t.Error("two WORKER_HASH_KEYs give the same hash key")
	}
	for _, k := range [][]byte{derived, set} {
		if len(k) != 32 || bytes.Contains(k, []byte(testAPISecret)) || bytes.Contains(k, []byte(testHashKey)) {
			t.Errorf("hash key %x is not a 32-byte digest", k)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:pw@a:4222", "nats://[redacted]@a:4222"},
		{"nats://token@a:4222", "nats://[redacted]@a:4222"},
		{"user:pw@a:4222", "[redacted]@a:4222"},
		{"token@a:4222", "[redacted]@a:4222"},
		{"nats://user:p@ss@a:4222", "nats://[redacted]@a:4222"},
		{"nats://user:p%zz@a:4222", "nats://[redacted]@a:4222"},
		{"nats://a:4222, tls://u:pw@b:4222,c:4222", "nats://a:4222,tls://[redacted]@b:4222,c:4222"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := redactURLs(tt.in); got != tt.want {
			t.Errorf("redactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// logConfigLine logs the configuration of env as JSON and returns the raw
// output and its "configuration" line decoded.
func logConfigLine(t *testing.T, env map[string]string) (string, map[string]any) {
	t.Helper()
	c, err := loadConfig(lookupFrom(env))
	if err != nil {
		t.Fatalf("loadConfig = %v", err)
	}
	var buf bytes.Buffer
	logConfig(newLogger(&buf, zerolog.TraceLevel, "json"), c)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if ev["message"] == "configuration" {
			return buf.String(), ev
		}
	}
	t.Fatalf("no configuration line in %s", buf.String())
	return "", nil
}

func TestLogConfigRedacts(t *testing.T) {
	const (
		alicePassword = "ALICEPW-m9Rt2q"
		bobPassword   = "BOBPW-c7Yx4n"
		token         = "TOKEN-e5Gb8w"
	)
	out, ev := logConfigLine(t, testEnv(map[string]string{
		"WORKER_HASH_KEY": testHashKey,
		"NATS_URL":        "nats://alice:" + alicePassword + "@a:4222,bob:" + bobPassword + "@b:4222,nats://" + token + "@c:4222,nats://d:4222",
	}))
	for _, s := range []string{testAPIKey, testAPISecret, testHashKey, alicePassword, bobPassword, token} {
		if strings.Contains(out, s) {
			t.Errorf("the configuration log holds the secret %q:\n%s", s, out)
		}
	}
	want := map[string]any{
		"nats_url":          "nats://[redacted]@a:4222,[redacted]@b:4222,nats://[redacted]@c:4222,nats://d:4222",
		"idenfy_api_key":    "[redacted]",
		"idenfy_api_secret": "[redacted]",
		"idenfy_base_url":   idenfy.DefaultBaseURL,
		"subject_prefix":    "idenfy.phone",
		"send_limits":       "3/10m,10/1d",
		"rate_limit":        "unlimited",
		"allowed_countries": "all",
		"metrics_addr":      ":9464",
	}
	for k, v := range want {
		if ev[k] != v {
			t.Errorf("configuration %s = %v, want %v", k, ev[k], v)
		}
	}
}

func TestLogConfigWarnsOfShortResultTTL(t *testing.T) {
	var buf bytes.Buffer
	c := defaultConfig()
	c.ResultTTL = 5 * time.Minute
	logConfig(newLogger(&buf, zerolog.InfoLevel, "json"), c)
	if !strings.Contains(buf.String(), `"level":"warn"`) || !strings.Contains(buf.String(), "WORKER_RESULT_TTL") {
		t.Errorf("logConfig with a 5m result TTL logged\n%s\nwant a warning naming WORKER_RESULT_TTL", buf.String())
	}
}

func TestLogConfigWarnsOfDerivedHashKey(t *testing.T) {
	for _, derived := range []bool{true, false} {
		var buf bytes.Buffer
		c := defaultConfig()
		c.HashKeyDerived = derived
		logConfig(newLogger(&buf, zerolog.InfoLevel, "json"), c)
		if warned := strings.Contains(buf.String(), "WORKER_HASH_KEY is unset"); warned != derived {
			t.Errorf("logConfig with a derived hash key %v warned %v, want %v:\n%s", derived, warned, derived, buf.String())
		}
	}
}

// TestValidateFieldsNameVariables makes every setting of a worker.Config
// bad and checks that each field Validate refuses is one a variable sets:
// a rule the worker adds then still names the variable to fix.
func TestValidateFieldsNameVariables(t *testing.T) {
	err := worker.Config{
		Prefix:           "idenfy.*",
		Replicas:         9,
		Concurrency:      -1,
		RateLimit:        worker.RateLimit{N: -1},
		RetryMaxElapsed:  -time.Second,
		JobMaxAge:        -time.Second,
		ResultTTL:        time.Second,
		ShutdownTimeout:  -time.Second,
		AllowedCountries: []string{"XX"},
		SendLimits:       []worker.SendLimit{{}},
	}.Validate()
	var fields []string
	for _, err := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *worker.FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("Validate error %v (%T) is not a *worker.FieldError", err, err)
		}
		fields = append(fields, fe.Field)
	}
	if len(fields) < 10 {
		t.Errorf("Validate refused %q, want the 10 bad fields", fields)
	}
	for _, f := range fields {
		found := false
		for _, v := range envVars {
			found = found || v.field == f
		}
		if !found {
			t.Errorf("no variable sets worker.Config.%s, which Validate refuses", f)
		}
	}
}

// TestWorkerConfigCarriesEverySetting: what the table parses reaches the
// worker (the breaker once did not).
func TestWorkerConfigCarriesEverySetting(t *testing.T) {
	c, err := loadConfig(lookupFrom(testEnv(map[string]string{
		"WORKER_BREAKER": "off", "WORKER_BREAKER_PROBE": "2s",
		"WORKER_RESULTS_STREAM": "R", "WORKER_RESULTS_MAX_AGE": "2h",
		"WORKER_PUMPING_GUARD": "5/1h", "WORKER_BLOCKED_NUMBER_TYPES": "pager",
	})))
	if err != nil {
		t.Fatal(err)
	}
	wc := c.workerConfig()
	if !wc.Breaker.Off || wc.BreakerProbe != 2*time.Second || wc.ResultsStream != "R" || wc.ResultsMaxAge != 2*time.Hour ||
		wc.PumpingGuard != (worker.PumpingGuard{N: 5, Window: time.Hour}) || len(wc.BlockedNumberTypes) != 1 {
		t.Errorf("workerConfig() = %+v, want the breaker off with a 2s probe, results stream R for 2h, guard 5/1h, pager blocked", wc)
	}
}
