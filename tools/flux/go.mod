// Module flux builds Flux's source-controller and kustomize-controller
// v1.9.6 from the Go module proxy, for the local node's GitOps test. It is
// kept out of go.work (build with GOWORK=off): the controllers pin their
// own k8s.io, controller-runtime and kustomize versions.
//
// The module has no Go package of its own: `go build -mod=mod` builds the
// two controllers' main packages, and go.sum pins what they use. Do not run
// `go mod tidy` here: with no package to keep them, tidy drops every
// requirement (and with a tools file it raises versions past the
// controllers' own and fails on a test dependency the proxy refuses).
module github.com/gmini-dev/gmini/tools/flux

go 1.26.0

// v1.10 needs Go 1.27; v1.9.6 is the newest release that builds with Go 1.26.
require (
	github.com/fluxcd/kustomize-controller v1.9.6
	github.com/fluxcd/kustomize-controller/api v1.9.6
	github.com/fluxcd/source-controller v1.9.6
	github.com/fluxcd/source-controller/api v1.9.6
)

// A dependency's replace directives are ignored, so the main module repeats
// the controllers' own.
replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.20220411205349-bde1400a84be

// kustomize-controller v1.9.6 pins kustomize v5.8.1 and yaml.v3.
replace (
	gopkg.in/yaml.v3 => gopkg.in/yaml.v3 v3.0.1
	sigs.k8s.io/kustomize/api => sigs.k8s.io/kustomize/api v0.21.1
	sigs.k8s.io/kustomize/kyaml => sigs.k8s.io/kustomize/kyaml v0.21.1
)

// source-controller v1.9.6 requires github.com/fluxcd/pkg/artifact v0.18.3,
// which the module proxy does not serve (403). v0.18.0 to v0.18.2 differ
// only in their go.mod, not in Go source; v0.18.1 is served.
replace github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.1
