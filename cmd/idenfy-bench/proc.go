package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat times. It
// is 100 on every Linux this runs on.
const clockTicks = 100

// process is a program under test in a process of its own, so that its CPU
// time and memory are its own.
type process struct {
	name string
	addr string // where it answers /readyz (and, for the worker, /debug/pprof)
	cmd  *exec.Cmd
	logs *tailBuffer
	show io.Writer // where to print logs on stop, when not nil
	done chan error
}

// startProcess starts path with args and env added to ours.
func startProcess(name, path string, args, env []string) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	logs := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logs: logs, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// waitReady polls url until it answers 200, or the process exits.
func (p *process) waitReady(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited before it was ready (%v); its output:\n%s", p.name, err, p.logs)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v; its output:\n%s", p.name, timeout, p.logs)
}

// stop ends the process with SIGTERM (a graceful shutdown), then SIGKILL.
func (p *process) stop() {
	defer func() {
		if p.show != nil {
			fmt.Fprintf(p.show, "--- output of %s ---\n%s", p.name, p.logs)
		}
	}()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// profile fetches a profile from the worker's /debug/pprof (e.g.
// "profile?seconds=10", "heap") and writes it to path.
func (p *process) profile(what, path string) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s", p.addr, what))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// goMemory reads the Go runtime's stack and heap in use from the worker's
// /metrics, in bytes; zeros when it has none.
func (p *process) goMemory() (stack, heap float64) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_memstats_stack_inuse_bytes "); ok {
			stack, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			heap, _ = strconv.ParseFloat(v, 64)
		}
	}
	return stack, heap
}

// usage is a process's CPU time and peak memory so far.
type usage struct {
	cpu     time.Duration
	peakRSS int64 // bytes
	// syscalls is the read and write system calls made so far, from
	// /proc/PID/io: each is a trip through the kernel on the shared cores.
	syscalls int64
}

func (p *process) usage() (usage, error) {
	return readUsage(p.cmd.Process.Pid)
}

// readUsage reads /proc/PID/stat (utime, stime), /proc/PID/status (VmHWM,
// the peak resident set) and /proc/PID/io (syscr, syscw).
func readUsage(pid int) (usage, error) {
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	rest := stat[bytes.LastIndexByte(stat, ')')+2:]
	fields := strings.Fields(string(rest))
	if len(fields) < 13 {
		return u, errors.New("short /proc stat")
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	u.cpu = time.Duration(utime+stime) * time.Second / clockTicks

	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(io), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && (k == "syscr" || k == "syscw") {
				n, _ := strconv.ParseInt(v, 10, 64)
				u.syscalls += n
			}
		}
	}

	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			u.peakRSS = kb << 10
		}
	}
	return u, sc.Err()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// freePort returns a loopback address nobody listens on right now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// buildWorker builds cmd/idenfy-worker into dir, so that the figures are
// those of the production binary.
func buildWorker(ctx context.Context, dir string, stderr io.Writer) (string, error) {
	out := dir + "/idenfy-worker"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/idenfy-worker")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the worker (run from the module root, or pass -worker-bin): %w", err)
	}
	return out, nil
}
