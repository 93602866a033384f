//go:build !linux

// Package local runs work as processes on this machine. It needs Linux
// (/proc, process-group and parent-death signals, cgroups); elsewhere New
// fails and plinth must be configured with another executor.
package local

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Backend is the Handle.Backend of this executor.
const Backend = "local"

var _ executor.Executor = (*Executor)(nil)

var errUnsupported = errors.New("the local executor needs Linux")

// Executor is unavailable on this platform.
type Executor struct{}

// Option configures New.
type Option func()

// WithCgroupParent is accepted for portability and ignored.
func WithCgroupParent(string) Option { return func() {} }

// WithoutCgroups is accepted for portability and ignored.
func WithoutCgroups() Option { return func() {} }

// WithLogger is accepted for portability and ignored.
func WithLogger(*slog.Logger) Option { return func() {} }

// New fails: the local executor needs Linux.
func New(context.Context, string, ...Option) (*Executor, error) {
	return nil, fault.Wrap(fault.FailedPrecondition, errUnsupported, "local executor")
}

// MaybeRunShim does nothing on this platform.
func MaybeRunShim() {}

func (*Executor) Start(context.Context, executor.Spec) (executor.Handle, error) {
	return executor.Handle{}, errUnsupported
}
func (*Executor) Wait(context.Context, executor.Handle) (executor.Status, error) {
	return executor.Status{}, errUnsupported
}
func (*Executor) Inspect(context.Context, executor.Handle) (executor.Status, error) {
	return executor.Status{}, errUnsupported
}
func (*Executor) Stop(context.Context, executor.Handle, time.Duration) error { return errUnsupported }
func (*Executor) Logs(context.Context, executor.Handle, executor.LogOptions) (io.ReadCloser, error) {
	return nil, errUnsupported
}
func (*Executor) Find(context.Context, string) (executor.Handle, error) {
	return executor.Handle{}, errUnsupported
}
func (*Executor) Remove(context.Context, executor.Handle) error { return errUnsupported }
func (*Executor) Capabilities() executor.Capabilities {
	return executor.Capabilities{Backend: Backend, CgroupReason: errUnsupported.Error()}
}
func (*Executor) Root() string { return "" }
