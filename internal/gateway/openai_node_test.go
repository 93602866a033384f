package gateway

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenAINodeClient drives the gateway with the official "openai" npm
// package, unmodified. $PLINTH_TEST_NODE_OPENAI names a directory where it
// is installed (`npm install --prefix DIR openai@6.49.0`; .ci/run does this).
func TestOpenAINodeClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Node.js process")
	}
	dir := os.Getenv("PLINTH_TEST_NODE_OPENAI")
	node, err := exec.LookPath("node")
	switch {
	case dir == "" || err != nil:
		requireAll(t, "the npm openai client is not installed (set PLINTH_TEST_NODE_OPENAI to a dir with node_modules/openai, and have node on PATH)")
	case !fileExists(filepath.Join(dir, "node_modules", "openai", "package.json")):
		requireAll(t, "PLINTH_TEST_NODE_OPENAI="+dir+" has no node_modules/openai")
	}
	le := newLLMEnv(t, false)
	up := fakeUpstream(t, "a")
	le.g.Update(llmSnap(1, &LLM{
		Backends: map[string]*LLMBackend{"a": openAIBackend("a", up)},
		Models:   map[string]*LLMModel{"gpt-4o": {Name: "gpt-4o", Pool: []LLMTarget{{Backend: "a"}}}},
	}))
	script, _ := filepath.Abs(filepath.Join("testdata", "openai_client.js"))
	cmd := exec.Command(node, script, le.srv.URL+"/openai/v1", "platform-alice", le.srv.URL)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "NODE OPENAI CLIENT OK") {
		t.Fatalf("node openai client against the gateway: %v\n%s", err, out)
	}
}

func requireAll(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("PLINTH_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
