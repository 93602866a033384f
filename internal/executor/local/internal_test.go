//go:build linux

package local

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/plinth-dev/plinth/internal/executor"
)

func TestParseStat(t *testing.T) {
	// The command name may contain spaces and parentheses.
	line := "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
	s, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.PID != 4242 || s.State != 'S' || s.PPID != 1 || s.PGRP != 4242 || s.Start != 987654 {
		t.Errorf("parsed %+v", s)
	}
	for _, bad := range []string{"", "12 noparen S 1", "12 (x) S 1 2"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
	self, err := readStat(os.Getpid())
	if err != nil || self.PID != os.Getpid() || self.Start <= 0 {
		t.Fatalf("readStat(self) = %+v, %v", self, err)
	}
	if !alive(os.Getpid(), self.Start) || alive(os.Getpid(), self.Start+1) {
		t.Error("alive does not check the start time")
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5 1 1 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"))
	f.Add([]byte("2 ()) ) Z 1 2 2"))
	f.Fuzz(func(t *testing.T, b []byte) { parseStat(b) })
}

func TestParseNvidiaSMI(t *testing.T) {
	out := "0, GPU-5a6bd1c2-aaaa-bbbb-cccc-0123456789ab, NVIDIA H100 80GB HBM3, 81559\n" +
		"1, GPU-7f00d1c2-aaaa-bbbb-cccc-0123456789ab, NVIDIA H100 80GB HBM3, [N/A]\n\n"
	gpus, err := parseNvidiaSMI(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []executor.GPU{
		{Index: 0, UUID: "GPU-5a6bd1c2-aaaa-bbbb-cccc-0123456789ab", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 81559 << 20},
		{Index: 1, UUID: "GPU-7f00d1c2-aaaa-bbbb-cccc-0123456789ab", Name: "NVIDIA H100 80GB HBM3"},
	}
	if len(gpus) != len(want) || gpus[0] != want[0] || gpus[1] != want[1] {
		t.Errorf("parsed %+v\nwant   %+v", gpus, want)
	}
	if g, err := parseNvidiaSMI(""); err != nil || len(g) != 0 {
		t.Errorf("empty output: %v, %v", g, err)
	}
	for _, bad := range []string{"0, GPU-x, name", "x, GPU-x, name, 1"} {
		if _, err := parseNvidiaSMI(bad); err == nil {
			t.Errorf("parseNvidiaSMI(%q) succeeded", bad)
		}
	}
}

func FuzzParseNvidiaSMI(f *testing.F) {
	f.Add("0, GPU-1, NVIDIA A100, 40960\n")
	f.Fuzz(func(t *testing.T, s string) { parseNvidiaSMI(s) })
}

func TestLookPath(t *testing.T) {
	if p, err := lookPath("sh", "relative:/usr/bin:/bin", "/"); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("lookPath(sh) = %q, %v", p, err)
	}
	if _, err := lookPath("sh", "relative", "/"); err == nil {
		t.Error("a relative PATH entry was searched")
	}
	if _, err := lookPath("/etc/passwd", "", "/"); err == nil {
		t.Error("a non-executable file was accepted")
	}
	if _, err := lookPath("/etc", "", "/"); err == nil {
		t.Error("a directory was accepted")
	}
}

// A process that is not ours, even with our pgid number and a pid that the
// handle names, is never signalled.
func TestTreeLeavesStrangersAlone(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	tr := tree{shimPID: cmd.Process.Pid, shimStart: st.Start + 7, pgid: cmd.Process.Pid, pgidStart: st.Start + 7, tag: t.TempDir()}
	if m := tr.members(); len(m) != 0 {
		t.Fatalf("members of a tree with wrong start times: %v", m)
	}
	if n := tr.kill(0); n != 0 {
		t.Fatalf("kill found %d", n)
	}
	if !alive(cmd.Process.Pid, st.Start) {
		t.Fatal("a stranger was killed")
	}
}

func TestBuildEnv(t *testing.T) {
	env := buildEnv(executor.Spec{
		Env:       map[string]string{"PORT": "1", "PORT_9": "2", "CUDA_VISIBLE_DEVICES": "0,1,2,3", shimEnv: "x", "LANG": "de_DE.UTF-8"},
		Resources: executor.Resources{GPUs: []string{"1", "GPU-abc"}},
	}, "/w", "/state/id", []int{5000, 5001})
	want := map[string]string{
		"PATH": DefaultPATH, "HOME": "/w", "LANG": "de_DE.UTF-8", "PORT": "5000", "PORT_1": "5001",
		"CUDA_VISIBLE_DEVICES": "1,GPU-abc", "NVIDIA_VISIBLE_DEVICES": "1,GPU-abc", tagEnv: "/state/id",
	}
	if len(env) != len(want) {
		t.Errorf("env = %v, want %v", env, want)
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}
