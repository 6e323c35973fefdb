//go:build unix

package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// exitLimit bounds the wait for a process killed with SIGKILL to be reaped.
const exitLimit = 10 * time.Second

// logTailLines is how much of each process's output a failed test shows.
const logTailLines = 60

// Command says what to run.
type Command struct {
	Name string   // names the process in logs and failures
	Path string   // the program
	Args []string // its arguments, without the program
	// Env is the whole environment of the process: nothing is inherited
	// from the test, whose own variables (IDENFY_*, NATS_*...) would
	// configure the program behind the test's back.
	Env []string
}

// A Process is a program started by a test. Its output, stdout and stderr
// together, goes to a file that outlives restarts; a failed test shows its
// tail. t.Cleanup kills it with its process group.
type Process struct {
	tb      testing.TB
	cmd     Command
	logPath string

	mu      sync.Mutex
	run     *exec.Cmd
	exited  chan struct{} // closed when the current run has been reaped
	exitErr error
}

// Start starts cmd and registers its cleanup.
func Start(tb testing.TB, cmd Command) *Process {
	tb.Helper()
	p := &Process{tb: tb, cmd: cmd, logPath: filepath.Join(tb.TempDir(), cmd.Name+".log")}
	tb.Cleanup(p.cleanup)
	if err := p.start(); err != nil {
		tb.Fatal(err)
	}
	return p
}

func (p *Process) start() error {
	out, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("proctest: %s: %w", p.cmd.Name, err)
	}
	fmt.Fprintf(out, "--- proctest: %s started at %s\n", p.cmd.Name, time.Now().Format(time.RFC3339Nano))
	run := exec.Command(p.cmd.Path, p.cmd.Args...)
	run.Env = p.cmd.Env
	if run.Env == nil {
		run.Env = []string{}
	}
	run.Stdout, run.Stderr = out, out
	run.SysProcAttr = procAttr()
	if err := run.Start(); err != nil {
		out.Close()
		return fmt.Errorf("proctest: starting %s: %w", p.cmd.Name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.run, p.exited, p.exitErr = run, exited, nil
	p.mu.Unlock()
	go func() {
		err := run.Wait()
		out.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Name is the process's name from its Command.
func (p *Process) Name() string { return p.cmd.Name }

// Exited is closed when the current run has ended.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Running reports whether the current run has not ended.
func (p *Process) Running() bool {
	select {
	case <-p.Exited():
		return false
	default:
		return true
	}
}

// Kill ends the process and its group with SIGKILL, as a crash would: no
// shutdown, no flush, no goodbye. It returns once the process is reaped.
func (p *Process) Kill() {
	p.tb.Helper()
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.Exited():
	case <-time.After(exitLimit):
		p.tb.Fatalf("proctest: %s survived SIGKILL for %v", p.cmd.Name, exitLimit)
	}
}

// Stop asks the process to end with SIGTERM and waits up to timeout; past
// it, the process is killed and Stop reports it. It returns how the
// process exited: nil for exit status 0.
func (p *Process) Stop(timeout time.Duration) error {
	p.tb.Helper()
	p.mu.Lock()
	run := p.run
	p.mu.Unlock()
	if err := run.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("proctest: SIGTERM to %s: %w", p.cmd.Name, err)
	}
	select {
	case <-p.Exited():
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exitErr
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("proctest: %s did not exit within %v of SIGTERM; killed", p.cmd.Name, timeout)
	}
}

// Restart starts the process again with the same command, its output
// appended to the same log. The process must have ended (Kill, Stop).
func (p *Process) Restart() {
	p.tb.Helper()
	if p.Running() {
		p.tb.Fatalf("proctest: restarting %s, which is still running", p.cmd.Name)
	}
	if err := p.start(); err != nil {
		p.tb.Fatal(err)
	}
}

// Log is the output of every run so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogTail is the last n lines of Log.
func (p *Process) LogTail(n int) string {
	lines := strings.SplitAfter(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("(%d lines before)\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
	}
	return b.String()
}

// signalGroup signals the process group of the current run: the program
// and anything it started.
func (p *Process) signalGroup(sig syscall.Signal) {
	p.mu.Lock()
	pid := p.run.Process.Pid
	p.mu.Unlock()
	_ = syscall.Kill(-pid, sig)
}

// cleanup kills what is left and, when the test failed, shows the log.
// The group is signalled even when the process has exited: a child it
// left behind is killed too (Linux reuses no pid while it names a process
// group, so the signal reaches that group or nobody).
func (p *Process) cleanup() {
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.Exited():
	case <-time.After(exitLimit):
		p.tb.Errorf("proctest: %s survived SIGKILL for %v", p.cmd.Name, exitLimit)
	}
	if p.tb.Failed() {
		p.tb.Logf("proctest: %s (%s), last lines of its output:\n%s", p.cmd.Name, p.logPath, p.LogTail(logTailLines))
	}
}
