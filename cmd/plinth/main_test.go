package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/plinth-dev/plinth/internal/cli"
	"github.com/plinth-dev/plinth/internal/client"
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
			// Scripts read the repository's examples from $REPO.
			repo, err := filepath.Abs("../..")
			if err != nil {
				return err
			}
			env.Setenv("REPO", repo)
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
			// mlflow METHOD PATH [JSON]: call the MLflow REST API of the
			// logged-in server as an MLflow client would; the answer goes
			// to stdout.
			"mlflow": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 {
					ts.Fatalf("usage: mlflow METHOD PATH [JSON]")
				}
				var creds struct {
					Current  string                       `json:"current"`
					Profiles map[string]map[string]string `json:"profiles"`
				}
				if err := json.Unmarshal([]byte(ts.ReadFile(filepath.Join(ts.Getenv("PLINTH_CONFIG_DIR"), "credentials.json"))), &creds); err != nil {
					ts.Fatalf("credentials file: %v", err)
				}
				p := creds.Profiles[creds.Current]
				var body io.Reader
				if len(args) > 2 {
					body = strings.NewReader(args[2])
				}
				req, err := http.NewRequest(args[0], p["url"]+args[1], body)
				ts.Check(err)
				req.Header.Set("Authorization", "Bearer "+p["key"])
				req.Header.Set("Content-Type", "application/json")
				res, err := http.DefaultClient.Do(req)
				ts.Check(err)
				defer res.Body.Close()
				out, _ := io.ReadAll(res.Body)
				ts.Stdout().Write(out)
				if (res.StatusCode != 200) != neg {
					ts.Fatalf("%s %s: %s %s", args[0], args[1], res.Status, out)
				}
			},
			// waitdeployment ENDPOINT DEPLOYMENT: wait up to 60s for a
			// deployment of the default workspace to be Succeeded.
			"waitdeployment": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: waitdeployment ENDPOINT DEPLOYMENT")
				}
				var creds struct {
					Current  string                       `json:"current"`
					Profiles map[string]map[string]string `json:"profiles"`
				}
				if err := json.Unmarshal([]byte(ts.ReadFile(filepath.Join(ts.Getenv("PLINTH_CONFIG_DIR"), "credentials.json"))), &creds); err != nil {
					ts.Fatalf("credentials file: %v", err)
				}
				p := creds.Profiles[creds.Current]
				c := client.New(p["url"], p["key"])
				deadline := time.Now().Add(60 * time.Second)
				for {
					d, err := c.GetDeployment(context.Background(), "default", args[0], args[1])
					if err == nil && d.State == "Succeeded" {
						return
					}
					if time.Now().After(deadline) {
						ts.Fatalf("deployment %s/%s not ready within 60s: %+v %v", args[0], args[1], d, err)
					}
					time.Sleep(200 * time.Millisecond)
				}
			},
			// runid VAR FILE: set VAR to the first run_id in FILE.
			"runid": func(ts *testscript.TestScript, neg bool, args []string) {
				m := regexp.MustCompile(`"run_id":"([0-9a-f]{32})"`).FindStringSubmatch(ts.ReadFile(args[1]))
				if m == nil {
					ts.Fatalf("no run_id in %s", args[1])
				}
				ts.Setenv(args[0], m[1])
			},
			// cred VAR FIELD: set VAR to the url or key of the current
			// profile in the credentials file.
			"cred": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 || (args[1] != "url" && args[1] != "key") {
					ts.Fatalf("usage: cred VAR url|key")
				}
				var creds struct {
					Current  string                       `json:"current"`
					Profiles map[string]map[string]string `json:"profiles"`
				}
				if err := json.Unmarshal([]byte(ts.ReadFile(filepath.Join(ts.Getenv("PLINTH_CONFIG_DIR"), "credentials.json"))), &creds); err != nil {
					ts.Fatalf("credentials file: %v", err)
				}
				ts.Setenv(args[0], creds.Profiles[creds.Current][args[1]])
			},
		},
	})
}
