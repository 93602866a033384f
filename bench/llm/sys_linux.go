package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal asks Linux to send sig to the child when this
// process (strictly, the thread that started it) ends, so a benchmark
// killed hard leaves no child serving.
func setParentDeathSignal(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig
}
