package compute

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

const meminfo = `MemTotal:       16384000 kB
MemFree:         8000000 kB
MemAvailable:   12000000 kB
`

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func TestProbeDetectsCPUsAndMemory(t *testing.T) {
	const total = int64(16384000) << 10
	tests := []struct {
		name    string
		numCPU  int
		files   fstest.MapFS
		cpus    int
		memory  int64
		noteHas string
	}{
		{name: "no cgroup limits", numCPU: 8, files: fstest.MapFS{"proc/meminfo": file(meminfo)}, cpus: 8, memory: total},
		{name: "cgroup v2 root limits", numCPU: 8, files: fstest.MapFS{
			"proc/meminfo":             file(meminfo),
			"proc/self/cgroup":         file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("4294967296\n"),
			"sys/fs/cgroup/cpu.max":    file("150000 100000\n"), // 1.5 CPUs rounds up to 2
		}, cpus: 2, memory: 4 << 30},
		{name: "cgroup v2 unlimited", numCPU: 4, files: fstest.MapFS{
			"proc/meminfo":             file(meminfo),
			"sys/fs/cgroup/memory.max": file("max\n"),
			"sys/fs/cgroup/cpu.max":    file("max 100000\n"),
		}, cpus: 4, memory: total},
		{name: "cgroup v2 nested: the smallest ancestor limit wins", numCPU: 16, files: fstest.MapFS{
			"proc/meminfo":     file(meminfo),
			"proc/self/cgroup": file("0::/user.slice/job-7\n"),
			"sys/fs/cgroup/user.slice/job-7/memory.max": file("max\n"),
			"sys/fs/cgroup/user.slice/memory.max":       file("2147483648\n"),
			"sys/fs/cgroup/memory.max":                  file("8589934592\n"),
			"sys/fs/cgroup/user.slice/job-7/cpu.max":    file("400000 100000\n"),
			"sys/fs/cgroup/user.slice/cpu.max":          file("max 100000\n"),
		}, cpus: 4, memory: 2 << 30},
		{name: "cgroup v2 quota above the CPU count keeps the CPU count", numCPU: 2, files: fstest.MapFS{
			"proc/meminfo":          file(meminfo),
			"sys/fs/cgroup/cpu.max": file("800000 100000\n"),
		}, cpus: 2, memory: total},
		{name: "cgroup v1 limits", numCPU: 8, files: fstest.MapFS{
			"proc/meminfo":     file(meminfo),
			"proc/self/cgroup": file("4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes":            file("9223372036854771712\n"), // unlimited at the root
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": file("1073741824\n"),
			"sys/fs/cgroup/cpu/cpu.cfs_quota_us":                    file("-1\n"),
			"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us":         file("50000\n"),
			"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us":        file("100000\n"),
		}, cpus: 1, memory: 1 << 30},
		{name: "cgroup v1 unlimited", numCPU: 2, files: fstest.MapFS{
			"proc/meminfo": file(meminfo),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
			"sys/fs/cgroup/cpu/cpu.cfs_quota_us":         file("-1\n"),
			"sys/fs/cgroup/cpu/cpu.cfs_period_us":        file("100000\n"),
		}, cpus: 2, memory: total},
		{name: "cgroup v1 in a container without a cgroup namespace", numCPU: 8, files: fstest.MapFS{
			"proc/meminfo":     file(meminfo),
			"proc/self/cgroup": file("4:memory:/kubepods/pod1/c1\n"),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("3221225472\n"),
		}, cpus: 8, memory: 3 << 30},
		{name: "no meminfo but a cgroup limit", numCPU: 2, files: fstest.MapFS{
			"sys/fs/cgroup/memory.max": file("1073741824\n"),
		}, cpus: 2, memory: 1 << 30, noteHas: "memory size not detected: open proc/meminfo: file does not exist"},
		{name: "nothing to read (not Linux)", numCPU: 10, files: fstest.MapFS{}, cpus: 10, memory: 0,
			noteHas: "memory size not detected"},
		{name: "meminfo without MemTotal", numCPU: 1, files: fstest.MapFS{"proc/meminfo": file("MemFree: 1 kB\n")}, cpus: 1,
			noteHas: "memory size not detected: /proc/meminfo has no MemTotal line"},
		{name: "meminfo with a bad number", numCPU: 1, files: fstest.MapFS{"proc/meminfo": file("MemTotal: lots kB\n")}, cpus: 1,
			noteHas: `memory size not detected: /proc/meminfo: MemTotal "lots" is not a number`},
		{name: "garbled memory.max", numCPU: 2, files: fstest.MapFS{
			"proc/meminfo":             file(meminfo),
			"sys/fs/cgroup/memory.max": file("lots\n"),
		}, cpus: 2, memory: total, noteHas: `cgroup memory limit not read: /sys/fs/cgroup/memory.max: "lots" is not a number of bytes`},
		{name: "garbled cpu.max", numCPU: 2, files: fstest.MapFS{
			"proc/meminfo":          file(meminfo),
			"sys/fs/cgroup/cpu.max": file("-5 100000\n"),
		}, cpus: 2, memory: total, noteHas: `cgroup CPU quota not read: /sys/fs/cgroup/cpu.max: "-5 100000": quota is not a positive number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Probe{FS: tt.files, NumCPU: tt.numCPU}.Detect()
			if err != nil {
				t.Fatal(err)
			}
			if m.CPUs != tt.cpus || m.MemoryBytes != tt.memory {
				t.Errorf("got %d CPUs, %d bytes; want %d, %d (notes %q)", m.CPUs, m.MemoryBytes, tt.cpus, tt.memory, m.Notes)
			}
			notes := strings.Join(m.Notes, "\n")
			if tt.noteHas == "" && notes != "" {
				t.Errorf("unexpected notes: %q", m.Notes)
			}
			if tt.noteHas != "" && !strings.Contains(notes, tt.noteHas) {
				t.Errorf("notes %q do not contain %q", m.Notes, tt.noteHas)
			}
		})
	}
}

// fakeRunner answers nvidia-smi with canned output and records the call.
func fakeRunner(out string, err error, calls *[]string) Runner {
	return func(_ context.Context, name string, args ...string) ([]byte, error) {
		*calls = append(*calls, name+" "+strings.Join(args, " "))
		return []byte(out), err
	}
}

func TestDetectGPUs(t *testing.T) {
	exitErr := errors.New("exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")
	tests := []struct {
		name string
		out  string
		err  error
		want []GPU
		fail string
	}{
		{name: "two GPUs", out: "0, NVIDIA A100-SXM4-80GB, 81920\n1, NVIDIA A100-SXM4-80GB, 81920\n",
			want: []GPU{{0, "NVIDIA A100-SXM4-80GB", 80 << 30}, {1, "NVIDIA A100-SXM4-80GB", 80 << 30}}},
		{name: "one GPU without a trailing newline", out: "0, NVIDIA GeForce RTX 4090, 24564",
			want: []GPU{{0, "NVIDIA GeForce RTX 4090", 24564 << 20}}},
		{name: "memory not available", out: "0, NVIDIA GH200 480GB, [N/A]\n", want: []GPU{{0, "NVIDIA GH200 480GB", 0}}},
		{name: "a name with a comma", out: "0, Tesla V100, SXM2, 16160\n", want: []GPU{{0, "Tesla V100, SXM2", 16160 << 20}}},
		{name: "blank lines", out: "\n0, Tesla T4, 15360\n\n", want: []GPU{{0, "Tesla T4", 15360 << 20}}},
		{name: "not installed", err: fmt.Errorf("exec: %w", exec.ErrNotFound)},
		{name: "no devices", out: "No devices were found\n", err: errors.New("exit status 6")},
		{name: "no devices, exit 0", out: "No devices were found\n"},
		{name: "no output", out: ""},
		{name: "driver not loaded", err: exitErr, fail: "nvidia-smi failed: " + exitErr.Error()},
		{name: "too few fields", out: "0, Tesla T4\n", fail: `nvidia-smi line 1 "0, Tesla T4": want "index, name, memory.total"`},
		{name: "bad index", out: "x, Tesla T4, 15360\n", fail: `nvidia-smi line 1 "x, Tesla T4, 15360": index is not a number`},
		{name: "empty name", out: "0, , 15360\n", fail: `nvidia-smi line 1 "0, , 15360": empty name`},
		{name: "bad memory", out: "0, Tesla T4, 15360\n1, Tesla T4, lots\n", fail: `nvidia-smi line 2 "1, Tesla T4, lots": memory.total is not a number of MiB`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []string
			got, err := DetectGPUs(context.Background(), fakeRunner(tt.out, tt.err, &calls))
			if want := "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits"; !slices.Equal(calls, []string{want}) {
				t.Errorf("ran %q, want %q", calls, want)
			}
			if tt.fail != "" {
				if err == nil || err.Error() != tt.fail {
					t.Fatalf("error %v, want %q", err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestProbeGPUFailureIsANote(t *testing.T) {
	var calls []string
	m, err := Probe{FS: fstest.MapFS{"proc/meminfo": file(meminfo)}, NumCPU: 4,
		Run: fakeRunner("", errors.New("exit status 9"), &calls)}.Detect()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.GPUs) != 0 || !slices.Equal(m.Notes, []string{"no GPUs listed: nvidia-smi failed: exit status 9"}) {
		t.Errorf("got GPUs %v, notes %q", m.GPUs, m.Notes)
	}
}

func TestLocalSKUs(t *testing.T) {
	m := Machine{CPUs: 16, MemoryBytes: 64 << 30, GPUs: []GPU{{0, "NVIDIA A100-SXM4-80GB", 80 << 30}, {1, "NVIDIA A100-SXM4-80GB", 80 << 30}}}
	type row struct {
		name, family string
		vcpus        int
		mem          int64
		gpus         int
		gpuType      string
		gpuMem       int64
	}
	var got []row
	for _, s := range LocalSKUs(m) {
		if s.PricePerHour != 0 || s.Source != SourceDetected {
			t.Errorf("%s: price %v, source %q", s.Name, s.PricePerHour, s.Source)
		}
		got = append(got, row{s.Name, s.Family, s.VCPUs, s.MemoryBytes, s.GPUs, s.GPUType, s.GPUMemoryBytes})
	}
	want := []row{
		{"local-cpu-small", "local-cpu", 1, 4 << 30, 0, "", 0},
		{"local-cpu-half", "local-cpu", 8, 32 << 30, 0, "", 0},
		{"local-cpu-full", "local-cpu", 16, 64 << 30, 0, "", 0},
		{"local-gpu-1", "local-gpu", 8, 32 << 30, 1, "NVIDIA A100-SXM4-80GB", 80 << 30},
		{"local-gpu-2", "local-gpu", 16, 64 << 30, 2, "NVIDIA A100-SXM4-80GB", 80 << 30},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
	if d := LocalSKUs(m)[3].Description; d != "this machine: 1 of its 2 GPUs, 8 of its 16 CPUs, 32.0 of its 64.0 GiB memory" {
		t.Errorf("description %q", d)
	}

	// A one-CPU machine of unknown memory with two different GPUs still has
	// every name, and its SKUs are valid.
	small := LocalSKUs(Machine{CPUs: 1, GPUs: []GPU{{0, "Tesla T4", 15 << 30}, {1, "Tesla V100", 16 << 30}}})
	if _, err := NewCatalogue(small); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, s := range small {
		names = append(names, fmt.Sprintf("%s/%d/%d/%s", s.Name, s.VCPUs, s.MemoryBytes, s.GPUType))
	}
	if want := []string{"local-cpu-small/1/0/", "local-cpu-half/1/0/", "local-cpu-full/1/0/", "local-gpu-1/1/0/Tesla T4", "local-gpu-2/1/0/Tesla T4 + Tesla V100"}; !slices.Equal(names, want) {
		t.Errorf("got %q, want %q", names, want)
	}
	if d := small[0].Description; d != "this machine: 1 of its 1 CPUs, memory not detected" {
		t.Errorf("description %q", d)
	}
}

// TestDetectSystem runs the real detection; on Linux it must find memory.
// Run with -v to see what this machine offers.
func TestDetectSystem(t *testing.T) {
	m, err := DetectSystem()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("detected %d CPUs, %.1f GiB, GPUs %+v, notes %q", m.CPUs, float64(m.MemoryBytes)/GiB, m.GPUs, m.Notes)
	if m.CPUs < 1 || m.CPUs > runtime.NumCPU() {
		t.Errorf("CPUs %d outside 1..%d", m.CPUs, runtime.NumCPU())
	}
	if runtime.GOOS == "linux" && m.MemoryBytes <= 0 {
		t.Errorf("no memory detected on Linux: %q", m.Notes)
	}
	c, err := LoadCatalogue("", DetectSystem)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.List() {
		if s.Source == SourceDetected {
			t.Logf("%-16s %3d vCPUs %7.1f GiB  %d x %s", s.Name, s.VCPUs, float64(s.MemoryBytes)/GiB, s.GPUs, s.GPUType)
		}
	}
}
