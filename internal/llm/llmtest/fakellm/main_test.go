package main

import "testing"

func TestRunRejectsUnknownMode(t *testing.T) {
	if err := run([]string{"-mode", "sometimes"}); err == nil {
		t.Fatal("unknown -mode accepted")
	}
}
