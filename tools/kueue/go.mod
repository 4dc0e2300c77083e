// Module kueue builds Kueue's controller manager v0.17.0 from the Go module
// proxy, for the local node's queue tests. It is kept out of go.work (build
// with GOWORK=off): Kueue pins its own k8s.io and controller-runtime
// versions. Its CRDs, RBAC and webhook configuration are read from the same
// module's config/ directory (tools/queue), so binary and manifests always
// match.
//
// The module has no Go package of its own: `go build -mod=mod` builds
// Kueue's main package, and go.sum pins what it uses. Do not run `go mod
// tidy` here: with no package to keep them, tidy drops every requirement.
module github.com/gmini-dev/gmini/tools/kueue

go 1.26.0

require sigs.k8s.io/kueue v0.17.0
