package proctest

import "syscall"

// procAttr puts the process in a group of its own, so that it is killed
// with whatever it starts, and has Linux kill it should the test binary
// die without running its cleanups (a test timeout's panic).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
