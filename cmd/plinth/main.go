// Command plinth is the Plinth platform in one binary: the server roles
// and the command-line client.
package main

import (
	"context"
	"os"

	"github.com/plinth-dev/plinth/internal/cli"
)

func main() {
	os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
