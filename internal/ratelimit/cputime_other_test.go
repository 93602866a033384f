//go:build !unix

package ratelimit

import (
	"testing"
	"time"
)

func reportCPU(*testing.B, time.Duration) {}

func startCPU() time.Duration { return 0 }
