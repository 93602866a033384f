//go:build !linux

package redistest

import "syscall"

// sysProcAttr: elsewhere the server is only killed by the test's cleanup.
func sysProcAttr() *syscall.SysProcAttr { return nil }
