//go:build linux

package local

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
)

// nvidiaQuery is the nvidia-smi invocation whose output parseNvidiaSMI reads.
var nvidiaQuery = []string{"--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"}

// detectGPUs asks nvidia-smi (when it is installed) for the node's NVIDIA
// GPUs. No nvidia-smi, or one that fails (no driver), means no GPUs.
func detectGPUs(ctx context.Context) ([]executor.GPU, error) {
	bin, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, nvidiaQuery...).Output()
	if err != nil {
		return nil, fmt.Errorf("running nvidia-smi: %w", err)
	}
	return parseNvidiaSMI(string(out))
}

// parseNvidiaSMI parses lines such as
//
//	0, GPU-5a6b..., NVIDIA H100 80GB HBM3, 81559
//
// (index, uuid, name, memory.total in MiB).
func parseNvidiaSMI(out string) ([]executor.GPU, error) {
	var gpus []executor.GPU
	for n, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 4 {
			return nil, fmt.Errorf("nvidia-smi line %d: want 4 fields, got %d: %q", n+1, len(f), line)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi line %d: index %q: %w", n+1, f[0], err)
		}
		g := executor.GPU{Index: idx, UUID: f[1], Name: f[2]}
		if mib, err := strconv.ParseInt(f[3], 10, 64); err == nil {
			g.MemoryBytes = mib << 20
		} // "[N/A]" (some MIG and vGPU setups) leaves it 0
		gpus = append(gpus, g)
	}
	return gpus, nil
}
