//go:build linux

package blobtest

import "syscall"

// sysProcAttr ties the server to this process: SIGKILL when it dies (so
// no server outlives a killed test binary), and a process group of its own
// so that a terminal's ^C does not stop it in the middle of a test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
