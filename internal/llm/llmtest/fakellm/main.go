// Command fakellm runs an llmtest server on its own, as a stand-in
// OpenAI-compatible upstream for benchmarks and shell scripts against
// Plinth's LLM gateway.
//
//	fakellm -addr 127.0.0.1:8081 -key sk-test -name a -chunk-delay 20ms
//
// It prints its base URL on stdout and serves until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/llm/llmtest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fakellm:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fakellm", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8081", "listen address")
	key := fs.String("key", "", "API key clients must send (empty: no check)")
	name := fs.String("name", "fakellm", "upstream name, used in replies and the x-llmtest-server header")
	models := fs.String("models", "", "comma-separated models/deployments to accept (empty: list defaults, accept any)")
	reply := fs.String("reply", "", "fixed reply text (empty: echo the prompt)")
	chunkDelay := fs.Duration("chunk-delay", 0, "delay between streamed chunks")
	firstDelay := fs.Duration("first-delay", 0, "delay before the first streamed chunk (time to first token)")
	mode := fs.String("mode", "answer", "default behavior: answer, 429, fail or hang")
	retryAfter := fs.Duration("retry-after", time.Second, "retry-after sent in -mode 429")
	failStatus := fs.Int("fail-status", 500, "status sent in -mode fail")
	if err := fs.Parse(args); err != nil {
		return err
	}

	var def llmtest.Behavior
	switch *mode {
	case "answer":
		def = llmtest.Answer{}
	case "429":
		def = llmtest.RateLimited{RetryAfter: *retryAfter}
	case "fail":
		def = llmtest.Fail{Status: *failStatus}
	case "hang":
		def = llmtest.Hang{}
	default:
		return fmt.Errorf("unknown -mode %q (want answer, 429, fail or hang)", *mode)
	}

	opts := llmtest.Options{
		Name:            *name,
		APIKey:          *key,
		Reply:           *reply,
		FirstChunkDelay: *firstDelay,
		ChunkDelay:      *chunkDelay,
		Addr:            *addr,
	}
	if *models != "" {
		opts.Models = strings.Split(*models, ",")
	}
	s := llmtest.New(opts)
	defer s.Close()
	s.SetDefault(def)
	fmt.Println(s.URL())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Fprintf(os.Stderr, "fakellm: served %d requests\n", s.Requests())
	return nil
}
