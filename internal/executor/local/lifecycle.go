//go:build linux

package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// work is a handle resolved against this executor's root.
type work struct {
	dir string
	h   executor.Handle // from handle.json when there is one, else the caller's
}

func (e *Executor) resolve(h executor.Handle) (work, error) {
	if h.Backend != Backend {
		return work{}, fault.InvalidField("handle.backend", "%q is not a handle of the %s executor", h.Backend, Backend)
	}
	if err := executor.ValidateID(h.ID); err != nil {
		return work{}, err
	}
	w := work{dir: e.stateDir(h.ID), h: h}
	var disk executor.Handle
	if ok, err := readJSON(filepath.Join(w.dir, fileHandle), &disk); ok && err == nil {
		w.h = disk
	}
	return w, nil
}

func (w work) data(key string) string { return w.h.Data[key] }

func (w work) int64Data(key string) int64 {
	v, _ := strconv.ParseInt(w.data(key), 10, 64)
	return v
}

// sameBoot reports whether the handle's pids mean anything now.
func (w work) sameBoot() bool {
	b := w.data(dataBootID)
	return b == "" || b == bootID()
}

func (w work) shimAlive() bool {
	return w.sameBoot() && alive(int(w.int64Data(dataShimPID)), w.int64Data(dataShimStart))
}

func (w work) tree() tree {
	t := tree{tag: w.dir, cgroup: w.data(dataCgroup)}
	if w.sameBoot() {
		t.shimPID, t.shimStart = int(w.int64Data(dataShimPID)), w.int64Data(dataShimStart)
		t.pgid, t.pgidStart = w.h.PID, w.h.StartTime
	}
	return t
}

func (w work) status() (executor.Status, bool, error) {
	var st executor.Status
	ok, err := readJSON(filepath.Join(w.dir, fileStatus), &st)
	return st, ok, err
}

// check is Inspect's logic: the recorded status; else Running while the
// supervisor lives; else the work is lost — its leftovers are killed and a
// Lost status recorded, so the answer is the same next time.
func (e *Executor) check(w work) (executor.Status, error) {
	if st, ok, err := w.status(); ok || err != nil {
		return st, err
	}
	if _, err := os.Stat(w.dir); errors.Is(err, os.ErrNotExist) {
		return executor.Status{State: executor.StateLost, Reason: executor.ReasonNotFound,
			Message: fmt.Sprintf("no record of work %q under %s", w.h.ID, e.root)}, nil
	}
	if _, err := os.Stat(filepath.Join(w.dir, fileHandle)); errors.Is(err, os.ErrNotExist) {
		// Not (yet) reported running: a Start in flight, or one whose
		// control plane died mid-way. Give it startTimeout.
		fi, err := os.Stat(filepath.Join(w.dir, fileLaunch))
		if err == nil && time.Since(fi.ModTime()) < startTimeout {
			return executor.Status{State: executor.StateRunning, Message: "starting"}, nil
		}
		return e.markLost(w, executor.ReasonStartFailed, "the supervisor never reported the job running")
	}
	if w.shimAlive() {
		st := executor.Status{State: executor.StateRunning}
		st.StartedAt, _ = time.Parse(time.RFC3339Nano, w.data(dataStartedAt))
		return st, nil
	}
	// The supervisor writes the status before it exits: look again.
	if st, ok, err := w.status(); ok || err != nil {
		return st, err
	}
	if !w.sameBoot() {
		return e.markLost(w, executor.ReasonRebooted, "the node rebooted while the work ran")
	}
	return e.markLost(w, executor.ReasonSupervisorLost,
		fmt.Sprintf("the supervisor (pid %s) ended without recording an exit status; the job's processes were killed", w.data(dataShimPID)))
}

// markLost kills whatever is left of the work and records it as lost
// (unless a status appeared meanwhile: the first status written wins).
func (e *Executor) markLost(w work, reason, msg string) (executor.Status, error) {
	if n := w.tree().kill(5 * time.Second); n > 0 {
		msg += fmt.Sprintf(" (%d processes could not be killed)", n)
	}
	if cg := w.data(dataCgroup); cg != "" {
		removeCgroup(cg)
	}
	st := executor.Status{State: executor.StateLost, Reason: reason, Message: msg, EndedAt: time.Now()}
	st.StartedAt, _ = time.Parse(time.RFC3339Nano, w.data(dataStartedAt))
	if _, err := writeOnce(filepath.Join(w.dir, fileStatus), st); err != nil {
		return st, fmt.Errorf("recording lost work %s: %w", w.h.ID, err)
	}
	e.log.Warn("work lost", "id", w.h.ID, "reason", reason, "detail", msg)
	st, _, err := w.status()
	return st, err
}

// Inspect implements executor.Executor.
func (e *Executor) Inspect(ctx context.Context, h executor.Handle) (executor.Status, error) {
	w, err := e.resolve(h)
	if err != nil {
		return executor.Status{}, err
	}
	return e.check(w)
}

// Wait implements executor.Executor. It polls the state directory (cheap
// reads of status.json and /proc) with a backoff up to 200 ms, and wakes at
// once when a supervisor started by this process exits.
func (e *Executor) Wait(ctx context.Context, h executor.Handle) (executor.Status, error) {
	w, err := e.resolve(h)
	if err != nil {
		return executor.Status{}, err
	}
	e.mu.Lock()
	exited := e.exits[h.ID]
	e.mu.Unlock()
	delay := 5 * time.Millisecond
	for {
		if w.h.Data == nil { // re-read: the handle may have appeared
			if w, err = e.resolve(h); err != nil {
				return executor.Status{}, err
			}
		}
		st, err := e.check(w)
		if err != nil || st.Done() {
			return st, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return executor.Status{}, ctx.Err()
		case <-exited:
			exited = nil
		case <-t.C:
		}
		t.Stop()
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// Stop implements executor.Executor. The supervisor does the work (SIGTERM
// to the tree, SIGKILL after grace), so a stop survives the control plane
// dying during grace; Stop also waits for it and falls back to killing the
// tree itself if the supervisor is gone or does not finish.
func (e *Executor) Stop(ctx context.Context, h executor.Handle, grace time.Duration) error {
	w, err := e.resolve(h)
	if err != nil {
		return err
	}
	grace = max(grace, 0)
	st, err := e.check(w)
	if err != nil {
		return err
	}
	if st.Done() {
		w.tree().kill(5 * time.Second) // normally nothing; makes "no survivors" certain
		return nil
	}
	if _, statErr := os.Stat(filepath.Join(w.dir, fileHandle)); statErr != nil {
		// Still starting: wait for it to report before asking it to stop.
		if w, err = e.awaitHandle(ctx, h); err != nil {
			return err
		}
	}
	if err := writeJSON(filepath.Join(w.dir, fileStop), stopRequest{Grace: grace}); err != nil {
		return diskFault(err, "writing the stop request")
	}
	shimPID, shimStart := int(w.int64Data(dataShimPID)), w.int64Data(dataShimStart)
	if w.shimAlive() {
		signalExact(shimPID, shimStart, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace + 5*time.Second)
	delay := 5 * time.Millisecond
	cancelled := ctx.Done()
	killedSelf := false
	for {
		st, err := e.check(w) // also handles a supervisor that died
		if err != nil {
			return err
		}
		if st.Done() {
			break
		}
		if time.Now().After(deadline) {
			if killedSelf {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("stopping work %s: the supervisor did not record a status", h.ID)
			}
			// The supervisor did not finish: do it ourselves.
			e.log.Warn("supervisor did not stop work in time; killing it", "id", h.ID)
			killedSelf = true
			w.tree().kill(5 * time.Second)
			signalExact(shimPID, shimStart, syscall.SIGKILL)
			deadline = time.Now().Add(10 * time.Second)
			continue
		}
		select {
		case <-cancelled:
			// The caller will not wait out grace: kill now, and give the
			// supervisor a moment to record it.
			cancelled = nil
			w.tree().kill(time.Second)
			deadline = time.Now().Add(2 * time.Second)
			killedSelf = true
			continue
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
	if n := w.tree().kill(5 * time.Second); n > 0 {
		return fmt.Errorf("stopping work %s: %d processes survive SIGKILL", h.ID, n)
	}
	return nil
}

// awaitHandle waits for a starting supervisor's handle.json (or status).
func (e *Executor) awaitHandle(ctx context.Context, h executor.Handle) (work, error) {
	deadline := time.Now().Add(startTimeout)
	for {
		w, err := e.resolve(h)
		if err != nil {
			return w, err
		}
		if _, err := os.Stat(filepath.Join(w.dir, fileHandle)); err == nil {
			return w, nil
		}
		if _, ok, _ := w.status(); ok || time.Now().After(deadline) {
			return w, nil
		}
		select {
		case <-ctx.Done():
			return w, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Find implements executor.Executor.
func (e *Executor) Find(ctx context.Context, id string) (executor.Handle, error) {
	if err := executor.ValidateID(id); err != nil {
		return executor.Handle{}, err
	}
	if _, err := os.Stat(e.stateDir(id)); errors.Is(err, os.ErrNotExist) {
		return executor.Handle{}, fault.New(fault.NotFound, "no work %q was started", id)
	}
	w, err := e.awaitHandle(ctx, executor.Handle{ID: id, Backend: Backend})
	if err != nil {
		return executor.Handle{}, err
	}
	if w.h.Data == nil { // never reported running: settle it now
		if _, err := e.check(w); err != nil {
			return executor.Handle{}, err
		}
	}
	return w.h, nil
}

// Remove implements executor.Executor. A working directory the spec named
// (Spec.Dir) is left alone; the state directory and work/ go.
func (e *Executor) Remove(ctx context.Context, h executor.Handle) error {
	w, err := e.resolve(h)
	if err != nil {
		return err
	}
	st, err := e.check(w)
	if err != nil {
		return err
	}
	if !st.Done() {
		return fault.New(fault.FailedPrecondition, "work %s is still running; stop it first", h.ID)
	}
	if cg := w.data(dataCgroup); cg != "" {
		removeCgroup(cg)
	}
	e.forget(h.ID)
	if err := os.RemoveAll(w.dir); err != nil {
		return fmt.Errorf("removing work %s: %w", h.ID, err)
	}
	return nil
}

// Logs implements executor.Executor. The local executor keeps stdout and
// stderr apart as well as combined.
func (e *Executor) Logs(ctx context.Context, h executor.Handle, opts executor.LogOptions) (io.ReadCloser, error) {
	w, err := e.resolve(h)
	if err != nil {
		return nil, err
	}
	name := fileOutput
	switch opts.Stream {
	case executor.StreamCombined:
	case executor.StreamStdout:
		name = fileStdout
	case executor.StreamStderr:
		name = fileStderr
	default:
		return nil, fault.InvalidField("stream", "unknown stream %q", opts.Stream)
	}
	f, err := os.Open(filepath.Join(w.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(w.dir); serr != nil {
			return nil, fault.New(fault.NotFound, "no work %q", h.ID)
		}
		// Started but the supervisor has not created its logs yet (or
		// failed before it could): an empty log.
		if f, err = os.OpenFile(filepath.Join(w.dir, name), os.O_RDONLY|os.O_CREATE, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if !opts.Follow {
		return f, nil
	}
	return &follower{ctx: ctx, e: e, w: w, f: f}, nil
}

// follower reads a growing log until the work has ended and everything it
// wrote has been read (the supervisor closes the logs before it writes the
// status, so the status appearing means the log is complete).
type follower struct {
	ctx   context.Context
	e     *Executor
	w     work
	f     *os.File
	polls int
	done  bool
}

func (r *follower) Read(p []byte) (int, error) {
	delay := 5 * time.Millisecond
	for {
		n, err := r.f.Read(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		if r.done {
			return 0, io.EOF
		}
		// At the end of what was written: has the work ended?
		r.polls++
		if _, ok, _ := r.w.status(); ok {
			r.done = true // read once more: the tail written before the status
			continue
		}
		if r.polls%20 == 0 { // now and then, notice a supervisor that died
			if w, err := r.e.resolve(r.w.h); err == nil {
				r.w = w
				if st, err := r.e.check(w); err == nil && st.Done() {
					r.done = true
					continue
				}
			}
		}
		select {
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

func (r *follower) Close() error { return r.f.Close() }

// Processes lists the live processes of the work (for tests and
// diagnostics; executortest uses it to prove Stop leaves no survivor).
func (e *Executor) Processes(ctx context.Context, h executor.Handle) ([]int, error) {
	w, err := e.resolve(h)
	if err != nil {
		return nil, err
	}
	var out []int
	for pid := range w.tree().members() {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out, nil
}
