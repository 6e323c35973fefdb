//go:build unix && !linux

package proctest

import "syscall"

// procAttr puts the process in a group of its own, so that it is killed
// with whatever it starts.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
