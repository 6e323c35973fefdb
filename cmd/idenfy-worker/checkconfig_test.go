package main

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCheckConfigReportsEveryProblem gives several bad values at once:
// check-config names each on its own line, the worker's own rules
// (worker.Config.Validate) included, and exits 2.
func TestCheckConfigReportsEveryProblem(t *testing.T) {
	env := testEnv(map[string]string{
		"IDENFY_API_SECRET": unset,
		"IDENFY_TIMEOUT":    "abc",
		"WORKER_RESULT_TTL": "30s", // parses, but the worker refuses it
		"WORKER_REPLICAS":   "6",   // likewise
		"LOG_LEVEL":         "loud",
	})
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"check-config"}, &out, &errOut, env)
	if exitCode(err) != 2 {
		t.Fatalf("run(check-config) = %v (exit %d), want exit 2", err, exitCode(err))
	}
	want := []string{"IDENFY_API_SECRET", "IDENFY_TIMEOUT", "WORKER_REPLICAS", "WORKER_RESULT_TTL", "LOG_LEVEL"}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("run(check-config) = %d lines, want %d (one per bad variable):\n%s", len(lines), len(want), err)
	}
	for _, name := range want {
		if !slices.ContainsFunc(lines, func(l string) bool {
			return strings.HasPrefix(l, "config: "+name+":") || strings.HasPrefix(l, "config: "+name+"=")
		}) {
			t.Errorf("run(check-config) has no line naming %s:\n%s", name, err)
		}
	}
	if out.Len() != 0 {
		t.Errorf("run(check-config) printed %q on stdout, want nothing", out.String())
	}
}

func TestCheckConfigOK(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"check-config"}, &out, &errOut, testEnv(nil)); err != nil {
		t.Fatalf("run(check-config) = %v, want nil", err)
	}
	if !strings.HasPrefix(out.String(), "configuration OK") || errOut.Len() != 0 {
		t.Errorf("run(check-config) printed %q and %q, want configuration OK and no warning", out.String(), errOut.String())
	}
}

// TestCheckConfigWarnsOfUnknownVariables checks that a misspelt variable is
// a warning with a suggestion, not a refusal.
func TestCheckConfigWarnsOfUnknownVariables(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"check-config"}, &out, &errOut, testEnv(map[string]string{"WORKER_CONCURENCY": "8"}))
	if err != nil {
		t.Fatalf("run(check-config) = %v, want nil: an unknown variable is only a warning", err)
	}
	if want := "WORKER_CONCURENCY is not a variable idenfy-worker reads: did you mean WORKER_CONCURRENCY?"; !strings.Contains(errOut.String(), want) {
		t.Errorf("run(check-config) warned %q, want %q", errOut.String(), want)
	}
}

func TestUnknownVars(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  []string
	}{
		{"known", []string{"NATS_URL", "IDENFY_API_KEY_FILE", "LOG_FORMAT"}, nil},
		{"other prefixes", []string{"HOME", "PATH", "GOFLAGS"}, nil},
		// compose gives the workers the NATS server's passwords, blanked.
		{"the NATS server's", []string{"NATS_WORKER_PASSWORD", "NATS_SANDBOX_CALLER_PASSWORD"}, nil},
		{"misspelt", []string{"WORKER_CONCURENCY"}, []string{"WORKER_CONCURENCY is not a variable idenfy-worker reads: did you mean WORKER_CONCURRENCY?"}},
		{"misspelt level", []string{"LOG_LEVL"}, []string{"LOG_LEVL is not a variable idenfy-worker reads: did you mean LOG_LEVEL?"}},
		{"another tool's", []string{"NATS_CONTEXT"}, []string{"NATS_CONTEXT is not a variable idenfy-worker reads (idenfy-worker help lists them)"}},
		{"sorted", []string{"WORKER_X", "METRICS_X"}, []string{
			"METRICS_X is not a variable idenfy-worker reads (idenfy-worker help lists them)",
			"WORKER_X is not a variable idenfy-worker reads (idenfy-worker help lists them)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unknownVars(tt.names); !slices.Equal(got, tt.want) {
				t.Errorf("unknownVars(%q) = %q, want %q", tt.names, got, tt.want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"WORKER_CONCURENCY", "WORKER_CONCURRENCY", 1},
		{"LOG_LEVEL", "LOG_LEVLE", 2},
		{"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestWorkerRefusesBeforeDialing checks that a setting only the worker's
// own rules refuse stops the daemon with exit 2, naming the variable,
// before it connects anywhere.
func TestWorkerRefusesBeforeDialing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := testEnv(map[string]string{"NATS_URL": "nats://" + ln.Addr().String(), "WORKER_RESULT_TTL": "30s", "METRICS_ADDR": ""})
	var out, errOut bytes.Buffer
	err = run(t.Context(), nil, &out, &errOut, env)
	var ce *configError
	if !errors.As(err, &ce) || ce.name != "WORKER_RESULT_TTL" || exitCode(err) != 2 {
		t.Fatalf("run(worker) with WORKER_RESULT_TTL=30s = %v (exit %d), want a configError naming WORKER_RESULT_TTL (exit 2)", err, exitCode(err))
	}
	// run has returned: a dial would already have reached the listener.
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Error("the worker connected to NATS before refusing its configuration")
	}
}
