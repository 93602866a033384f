package executor

import (
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/fault"
)

func TestStageValidate(t *testing.T) {
	env := map[string]string{"TOKEN": "plk_x"}
	good := Stage{Server: "https://plinth.example", TokenEnv: "TOKEN", Dirs: []string{"/w/out"},
		Fetch:  []Fetch{{Kind: FetchData, Workspace: "ws", Source: "tx", Version: "3", To: "/w/in"}},
		Upload: []Upload{{From: "/w/out", To: "ws/1/run/artifacts/outputs/out"}}}
	if err := good.Validate(env); err != nil {
		t.Fatalf("a good stage: %v", err)
	}
	for name, c := range map[string]struct {
		change func(*Stage)
		field  string
	}{
		"server":       {func(s *Stage) { s.Server = "plinth:8080" }, "stage.server"},
		"token":        {func(s *Stage) { s.TokenEnv = "NOPE" }, "stage.token_env"},
		"kind":         {func(s *Stage) { s.Fetch[0].Kind = "s3" }, "stage.fetch.kind"},
		"version":      {func(s *Stage) { s.Fetch[0].Version = "" }, "stage.fetch.version"},
		"relative":     {func(s *Stage) { s.Fetch[0].To = "in" }, "stage.fetch.to"},
		"escape":       {func(s *Stage) { s.Dirs = []string{"/w/../etc"} }, "stage.dirs"},
		"upload key":   {func(s *Stage) { s.Upload[0].To = "/abs" }, "stage.upload.to"},
		"upload from":  {func(s *Stage) { s.Upload[0].From = "out" }, "stage.upload.from"},
		"no workspace": {func(s *Stage) { s.Fetch[0].Workspace = "" }, "stage.fetch"},
	} {
		s := good
		s.Fetch = append([]Fetch(nil), good.Fetch...)
		s.Upload = append([]Upload(nil), good.Upload...)
		c.change(&s)
		err := s.Validate(env)
		fe, ok := fault.As(err)
		if !ok || fe.Kind != fault.Invalid || fe.Field != c.field {
			t.Errorf("%s: %v, want invalid %s", name, err, c.field)
		}
	}
	spec := Spec{ID: "x", Shell: "true", Env: env, Stage: &Stage{Server: "ftp://x", TokenEnv: "TOKEN"}}
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), "stage.server") {
		t.Errorf("Spec.Validate checks the stage: %v", err)
	}
}

func TestHandleAddress(t *testing.T) {
	for _, c := range []struct {
		h    Handle
		i    int
		want string
	}{
		{Handle{Node: "laptop", Ports: []int{8000}}, 0, "127.0.0.1:8000"},
		{Handle{Host: "10.1.2.3", Ports: []int{8000, 8001}}, 1, "10.1.2.3:8001"},
		{Handle{Host: "fd00::5", Ports: []int{80}}, 0, "[fd00::5]:80"},
		{Handle{Ports: []int{80}}, 1, ""},
		{Handle{}, 0, ""},
	} {
		if got := c.h.Address(c.i); got != c.want {
			t.Errorf("%+v port %d: %q, want %q", c.h, c.i, got, c.want)
		}
	}
}
