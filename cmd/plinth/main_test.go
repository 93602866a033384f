package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/plinth-dev/plinth/internal/cli"
)

// TestMain lets the test binary stand in for the plinth binary, so the
// scripts and the crash test run the real command without a separate build.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"plinth": func() { os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the CLI flows in testdata/scripts against a real
// `plinth up` started by each script.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/scripts",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PLINTH_CONFIG_DIR", filepath.Join(env.WorkDir, "config"))
			env.Setenv("PLINTH_LOG_FORMAT", "json")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// waitfile PATH: wait up to 30s for a file to appear (the
			// server writes the CLI credentials once it is listening).
			"waitfile": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: waitfile PATH")
				}
				path := ts.MkAbs(args[0])
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					if _, err := os.Stat(path); err == nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				ts.Fatalf("%s did not appear within 30s", path)
			},
			// credkey VAR: set VAR to the key saved in the credentials file.
			"credkey": func(ts *testscript.TestScript, neg bool, args []string) {
				data := ts.ReadFile("$PLINTH_CONFIG_DIR/credentials.json")
				i := strings.Index(data, `"key": "`)
				if i < 0 {
					ts.Fatalf("no key in credentials file")
				}
				rest := data[i+len(`"key": "`):]
				ts.Setenv(args[0], rest[:strings.Index(rest, `"`)])
			},
		},
	})
}
