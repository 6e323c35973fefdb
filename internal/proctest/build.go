//go:build unix

package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// NATSServerPackage is the nats-server main package. Built from this
// module, it is the version in go.mod: the one the embedded test servers
// run.
const NATSServerPackage = "github.com/nats-io/nats-server/v2"

// WorkerPackage is the idenfy-worker command, relative to the module root.
const WorkerPackage = "./cmd/idenfy-worker"

// NATSServerBinary returns the path of a nats-server binary.
func NATSServerBinary(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, NATSServerPackage, "nats-server")
}

// WorkerBinary returns the path of an idenfy-worker binary built from this
// checkout.
func WorkerBinary(tb testing.TB) string {
	tb.Helper()
	return Binary(tb, WorkerPackage, "idenfy-worker")
}

// built holds the binaries of this test binary run, by name; a failed
// build is remembered too, so that it fails every test that needs it
// without building again.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*binary
}

type binary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds pkg (an import path, or a path relative to the module
// root) with go build into a directory shared by the tests of this run and
// returns the binary's path. It is built once per run, whatever the number
// of tests asking for it.
func Binary(tb testing.TB, pkg, name string) string {
	tb.Helper()
	if !mainCalled {
		tb.Fatal("proctest: the package's TestMain must call proctest.Main, which removes the binaries built")
	}
	built.mu.Lock()
	if built.bins == nil {
		built.bins = make(map[string]*binary)
	}
	b := built.bins[name]
	if b == nil {
		b = &binary{}
		built.bins[name] = b
	}
	built.mu.Unlock()
	b.once.Do(func() { b.path, b.err = build(pkg, name) })
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

func build(pkg, name string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("proctest: building %s needs the go command: %w", name, err)
	}
	root, err := moduleRoot(goTool)
	if err != nil {
		return "", err
	}
	dir, err := buildDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	cmd := exec.Command(goTool, "build", "-o", path, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("proctest: go build -o %s %s: %v\n%s", path, pkg, err, out)
	}
	return path, nil
}

// moduleRoot is the directory of the go.mod of the package under test (go
// test runs a test binary in its package's directory).
func moduleRoot(goTool string) (string, error) {
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("proctest: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("proctest: the tests run outside a Go module (go env GOMOD = %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}

func buildDir() (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "proctest-bin-")
		if err != nil {
			return "", fmt.Errorf("proctest: %w", err)
		}
		built.dir = dir
	}
	return built.dir, nil
}

func removeBuilt() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}
