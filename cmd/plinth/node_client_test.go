package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeMLflowClient drives a real `plinth up` with an MLflow client
// nobody here wrote: the "mlflow" package from npm, unmodified.
// $PLINTH_TEST_NODE_MLFLOW names a directory where it is installed
// (`npm install --prefix DIR mlflow@2.0.7`; .ci/run does this).
func TestNodeMLflowClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server and a Node.js process")
	}
	dir := os.Getenv("PLINTH_TEST_NODE_MLFLOW")
	node, err := exec.LookPath("node")
	switch {
	case dir == "" || err != nil:
		requireAll(t, "the npm MLflow client is not installed (set PLINTH_TEST_NODE_MLFLOW to a dir with node_modules/mlflow, and have node on PATH)")
	case !exists(filepath.Join(dir, "node_modules", "mlflow", "package.json")):
		requireAll(t, "PLINTH_TEST_NODE_MLFLOW="+dir+" has no node_modules/mlflow")
	}
	_, url := startPlinth(t, t.TempDir())
	script, _ := filepath.Abs(filepath.Join("testdata", "node", "mlflow_client.js"))
	cmd := exec.Command(node, script, url, crashKey)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "NODE MLFLOW CLIENT OK") {
		t.Fatalf("node MLflow client against plinth: %v\n%s", err, out)
	}
}

func requireAll(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("PLINTH_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
