//go:build !linux

package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal does nothing outside Linux.
func setParentDeathSignal(*exec.Cmd, syscall.Signal) {}
