package images

import "path/filepath"

// NetProbe returns the image the NetworkPolicy tests run their client and
// server pods from: tools/images/netprobe, a static HTTP and TCP client
// that reports what got through as JSON.
func NetProbe(repoRoot, tag string) Spec {
	return Spec{Name: "netprobe", Tag: "gmini-netprobe:" + tag, ModuleDir: filepath.Join(repoRoot, "tools"), Package: "./images/netprobe"}
}
