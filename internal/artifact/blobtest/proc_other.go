//go:build !linux

package blobtest

import "syscall"

// sysProcAttr: elsewhere the server is only killed by the test's cleanup.
func sysProcAttr() *syscall.SysProcAttr { return nil }
