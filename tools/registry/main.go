// Command registry is CNCF Distribution's registry (the `registry serve
// CONFIG` command) with only the filesystem storage driver linked in: no
// cloud storage drivers, pull-through proxy, token auth or CDN middleware,
// none of which a registry on a local node may use, since each of them
// talks to another host.
//
// The local cluster provider runs it inside the node's network namespace
// (tools/cluster/local/registry.go). The module is kept out of go.work and
// built with GOWORK=off, like tools/kube.
package main

import (
	"os"

	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if err := registry.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
