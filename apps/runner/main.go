// Command runner runs one gmini experiment. The backend starts it as the
// single container of a Kubernetes Job, with the experiment JSON as its only
// argument, exactly as the original tutorial's `python3 app.py '<json>'`.
package main

import (
	"os"

	"github.com/gmini-dev/gmini/apps/runner/internal/run"
)

func main() {
	os.Exit(run.Main(os.Args[1:], os.Stdout, os.Stderr))
}
