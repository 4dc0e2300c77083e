// Command gmini is the command line of gmini's HTTP API: submit, get,
// list, read the output of and cancel experiments. Install it with
//
//	go install github.com/gmini-dev/gmini/apps/backend/cmd/gmini@latest
package main

import (
	"os"

	"github.com/gmini-dev/gmini/apps/backend/cmd/gmini/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}
