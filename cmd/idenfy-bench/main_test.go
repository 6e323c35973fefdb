package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The bench starts its baselines by running its own binary with a
// subcommand: the test binary does the same.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "baseline-responder":
			exit(runBaselineResponder())
		case "baseline-jobs":
			exit(runBaselineJobs())
		}
	}
	os.Exit(m.Run())
}

func exit(err error) {
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

// workerBin builds the worker once for the tests.
func workerBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "idenfy-worker")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/idenfy-worker/idenfy-worker/cmd/idenfy-worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the worker: %v\n%s", err, out)
	}
	return bin
}

// A short run of each scenario that compares the worker with a baseline:
// the tool measures both, every request is answered, the ratio is there.
// It asserts nothing about speed.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	bin := workerBin(t)
	for _, args := range [][]string{
		{"-duration", "1s", "-warmup", "200ms", "request"},
		{"-jobs", "300", "jobs"},
		{"-duration", "1s", "-warmup", "200ms", "-rate", "50", "-latency", "10ms", "request-rate"},
	} {
		t.Run(args[len(args)-1], func(t *testing.T) {
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			all := append([]string{"-worker-bin", bin, "-json", "-concurrency", "8", "-requesters", "8"}, args...)
			if err := run(ctx, all, &out, &errOut); err != nil {
				t.Fatalf("run(%q) = %v\n%s", all, err, errOut.String())
			}
			var rep report
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("the output is not the JSON report: %v\n%s", err, out.String())
			}
			if len(rep.Comparisons) != 1 || len(rep.Comparisons[0].Figures) != 2 {
				t.Fatalf("report = %+v, want one comparison of two figures", rep)
			}
			for _, f := range rep.Comparisons[0].Figures {
				if f.Completed == 0 || f.Failed != 0 || f.PerSecond <= 0 {
					t.Errorf("%s: completed %d, failed %d, %.0f/s; want some, none failed", f.Program, f.Completed, f.Failed, f.PerSecond)
				}
			}
			if c := rep.Comparisons[0]; c.Ratio <= 0 && c.AddedP99Ms == 0 {
				t.Errorf("comparison %+v has neither a ratio nor an added latency", c)
			}
		})
	}
}

func TestParseRefusesNonsense(t *testing.T) {
	for _, args := range [][]string{
		{"nonsense"},
		{"-concurrency", "0", "request"},
		{"-jobs", "1", "jobs"},
		{"-duration", "0s", "request"},
		{"-workers", "0", "fleet-limit"},
		{"-limit", "fast", "fleet-limit"},
		{"-outage", "0s", "fleet-outage"},
	} {
		if _, err := parse(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parse(%q) = nil error, want one", args)
		}
	}
}

// A short run of each fleet scenario: every job completes, every request
// is answered, both breaker settings are measured. It asserts nothing
// about speed.
func TestFleetScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	bin := workerBin(t)
	run1 := func(t *testing.T, args ...string) []byte {
		t.Helper()
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		all := append([]string{"-worker-bin", bin, "-json", "-concurrency", "8", "-workers", "2"}, args...)
		if err := run(ctx, all, &out, &errOut); err != nil {
			t.Fatalf("run(%q) = %v\n%s", all, err, errOut.String())
		}
		return out.Bytes()
	}
	t.Run("fleet-limit", func(t *testing.T) {
		var rep fleetLimitReport
		if err := json.Unmarshal(run1(t, "-limit", "50/s", "-jobs", "100", "fleet-limit"), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Completed != 100 || rep.Failed != 0 || rep.Calls < 100 || rep.MostIn1s == 0 {
			t.Errorf("report = %+v, want 100 jobs completed, none failed, the calls counted", rep)
		}
	})
	t.Run("fleet-outage", func(t *testing.T) {
		var rep fleetOutageReport
		if err := json.Unmarshal(run1(t, "-rate", "20", "-warmup", "500ms", "-outage", "1s", "-duration", "1s", "fleet-outage"), &rep); err != nil {
			t.Fatal(err)
		}
		if len(rep.Runs) != 2 || rep.Runs[0].Breaker != "off" || rep.Runs[1].Breaker != "5/10s" {
			t.Fatalf("runs = %+v, want WORKER_BREAKER=off, then 5/10s", rep.Runs)
		}
		for _, r := range rep.Runs {
			if r.OutageRequests == 0 || r.Requests == 0 {
				t.Errorf("WORKER_BREAKER=%s: %+v, want requests during the outage", r.Breaker, r)
			}
		}
	})
}
