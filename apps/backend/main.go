// Command backend serves gmini's HTTP API: POST /experiment spawns a
// Kubernetes Job from the runner template.
package main

import (
	"os"

	"github.com/gmini-dev/gmini/apps/backend/internal/app"
)

func main() {
	os.Exit(app.Main())
}
