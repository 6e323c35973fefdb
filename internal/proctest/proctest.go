//go:build unix

// Package proctest runs real programs for tests: binaries built once per
// test binary, processes whose output is kept in a file and shown when the
// test fails, and a NATS cluster of nats-server processes that a test can
// kill -9 and restart. Every process a test starts is killed, with its
// process group, by t.Cleanup.
//
// A package that uses it hands its TestMain to Main, which removes the
// built binaries once the tests are done:
//
//	func TestMain(m *testing.M) { proctest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		c := proctest.StartCluster(t, 3)
//		w := proctest.Start(t, proctest.Command{Name: "worker", Path: proctest.WorkerBinary(t), Env: env})
//		...
//		w.Kill()
//		w.Restart()
//	}
package proctest

import (
	"os"
	"testing"
	"time"
)

// Main runs the tests, removes what they built, and exits with their code.
func Main(m *testing.M) {
	mainCalled = true
	code := m.Run()
	removeBuilt()
	os.Exit(code)
}

// mainCalled tells whether the binaries built have someone to remove them.
var mainCalled bool

// WaitFor polls cond until it holds, failing the test with what after
// limit. Every wait of a test that runs processes is bounded: a process
// that hangs fails the test instead of hanging it.
func WaitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("proctest: waited %v for %s", limit, what)
		}
		time.Sleep(pollInterval)
	}
}

// Await is WaitFor for a condition that can say why it does not hold yet:
// check returns nil once it holds, and the test fails with its last error.
func Await(tb testing.TB, limit time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("proctest: waited %v for %s: %v", limit, what, err)
		}
		time.Sleep(pollInterval)
	}
}

// pollInterval is how often a condition is checked: often enough that a
// test stops waiting soon after, seldom enough that a server polled for
// its health does not fill its log with failed checks.
const pollInterval = 50 * time.Millisecond
