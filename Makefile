# gmini: the README explains each target. Every target works on a fresh
# clone; the ones that need a cluster build and start it themselves.
SHELL := /bin/bash
GO ?= go
MODULES := apps/backend apps/runner tools
# Go test flags for the fast tests. -count=1 because the manifest tests read
# YAML outside their module, which Go's test cache does not track.
UNIT_FLAGS ?= -count=1 -short

.PHONY: all build test unit fuzz lint fmt vet actionlint images cluster-test e2e reliability check-clean up down proxy bench kube kube-test kube-router clean

all: lint test

## build: compile every Go module of the workspace
build:
	@for m in $(MODULES); do (cd $$m && $(GO) build ./...) || exit 1; done

## unit: fast tests (no cluster): runner, backend, manifests, tools
unit:
	@for m in $(MODULES); do (cd $$m && $(GO) test $(UNIT_FLAGS) ./...) || exit 1; done

## test: everything CI runs: lint, fast tests, bounded fuzzing, the local provider's own
## tests, the end-to-end and reliability suites on real clusters, then a check that
## nothing was left behind
test: lint unit fuzz store-test kube kube-router registry flux kueue kube-test cluster-test e2e reliability check-clean

## fuzz: the request decoder and the ID-to-Job-name mapping, FUZZTIME each
# Counts, not durations: a duration is a context deadline in Go's fuzz
# coordinator, and a worker still minimizing a new input when it passes fails
# the target with "context deadline exceeded" although nothing was found.
# Minimizing is bounded too: unbounded (60s by default), one long input can
# stall both workers for the whole run. 100000 runs of each take 10-25 s here
# (fewer execs/s while the fuzzer still finds new coverage).
FUZZTIME ?= 100000x
FUZZMINIMIZETIME ?= 500x
FUZZ_TARGETS := FuzzDecode:./internal/experiment/ FuzzJobName:./jobspec/
fuzz:
	@for tp in $(FUZZ_TARGETS); do t=$${tp%%:*}; p=$${tp#*:}; \
	  (cd apps/backend && $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) \
	    -fuzzminimizetime $(FUZZMINIMIZETIME) $$p) || exit 1; \
	done

## lint: gofmt, go vet (e2e files included; tools/kube's and tools/registry's main packages too)
## and actionlint on the GitHub workflows
lint: fmt vet actionlint
fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
# The modules outside go.work (tools/internal/modbuild builds them) are vetted
# with modbuild's environment and the -trimpath of its builds, so the
# dependencies' compiled packages and vet's facts about them come from the
# build cache that `make kube` and `make registry` fill (cold: the same
# minutes of compiling a first `make kube` takes; then seconds). Only their
# own main package (`.`), never ./... of what they link. tools/kuberouter and
# tools/flux and tools/kueue hold no Go file of their own (a go.mod pinning a third-party
# program): nothing of ours to vet there.
EXT_VET_ENV := GOWORK=off CGO_ENABLED=0 GOTOOLCHAIN=local
EXT_VET_MODULES := tools/kube tools/registry
vet:
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@cd tools && $(GO) vet -tags e2e ./e2e/ ./reliability/
	@for m in $(EXT_VET_MODULES); do (cd $$m && $(EXT_VET_ENV) $(GO) vet -trimpath .) || exit 1; done
actionlint:
	@cd tools && $(GO) tool actionlint ../.github/workflows/*.yaml

## images: backend, runner and pause images as OCI archives in _output/images (no Docker needed)
images:
	cd tools && $(GO) run ./cmd/images

## kube: the local node's Kubernetes and etcd binary, _output/bin/kube (a cold build takes minutes;
## the Go build cache makes later ones a relink)
kube:
	cd tools && $(GO) run ./cmd/modbuild kube

## kube-router: kube-router v2.1.0, the local node's NetworkPolicy engine (test-only), from
## tools/kuberouter into _output/bin/kube-router (cold: minutes, with progress; warm: seconds);
## the e2e suite builds it too
kube-router:
	cd tools && $(GO) run ./cmd/modbuild kube-router

## registry, flux: the GitOps loop's programs from modules outside go.work, into _output/bin:
## CNCF Distribution's registry v3.1.2 (tools/registry), which the local node runs, and Flux's
## source-controller and kustomize-controller v1.9.6 (tools/flux), which the e2e suite packs
## into images (cold: minutes, with progress; warm: seconds); the e2e suite builds them too
.PHONY: registry flux kueue
registry:
	cd tools && $(GO) run ./cmd/modbuild registry
flux:
	cd tools && $(GO) run ./cmd/modbuild flux

## kueue: Kueue's controller manager v0.17.0 (tools/kueue), which the e2e suite packs into an
## image and installs with its module's own config/ (cold: about 3.5 minutes, with progress;
## warm: seconds); the e2e suite builds it too
kueue:
	cd tools && $(GO) run ./cmd/modbuild kueue

## push: gmini-backend and gmini-runner for linux/amd64 and linux/arm64, pushed as image
## indexes to REGISTRY (host[:port][/path]) by digest, then tagged TAG (default: the commit);
## prints the digest references. Log in first (docker login); REGISTRY_CA trusts a private CA.
## promote: pin overlays/ENV (default prod) to the digests REGISTRY/gmini-*:TAG has now.
## publish-manifests: k8s/ and overlays/ as the OCI artifact Flux reads, REGISTRY/gmini-manifests:main
.PHONY: push promote publish-manifests
ENV ?= prod
RELEASE_FLAGS = -registry "$(REGISTRY)" $(if $(TAG),-tag "$(TAG)") $(if $(REGISTRY_CA),-ca "$(abspath $(REGISTRY_CA))")
push:
	cd tools && $(GO) run ./cmd/release push $(RELEASE_FLAGS)
promote:
	cd tools && $(GO) run ./cmd/release promote -env "$(ENV)" $(RELEASE_FLAGS)
publish-manifests:
	cd tools && $(GO) run ./cmd/release manifests $(RELEASE_FLAGS)

## kube-test: the tests of tools/kube, a module outside go.work, with the flags of
## its build so the compiled Kubernetes packages come from the build cache; then
## modbuild's TestBuildKube (a real build over a running binary), which -short skips
# -vet=off: go test's vet would first analyse every Kubernetes package the
# binary links, for facts (4-5 minutes when not cached), to check one small
# main package (a dispatcher); `make vet` vets it, with facts cached.
# TestBuildKube runs after `make kube`, so its build is a relink from the cache.
kube-test: kube
	cd tools/kube && $(EXT_VET_ENV) $(GO) test -vet=off -trimpath -count=1 ./...
	cd tools && $(GO) test -count=1 -timeout 25m -run '^TestBuildKube$$' ./internal/modbuild/

## cluster-test: the local provider's tests: create a node, run a Job, restart the
## API server, kill containerd, destroy, and assert no process, mount, netns or iptables rule is left
cluster-test: kube
	cd tools && $(GO) test -count=1 -v -timeout 20m ./cluster/local/...

## CLUSTER: the provider `make up`, `make proxy`, `make down`, `make e2e` and `make reliability`
## use: auto (default: kind when a Docker engine answers and has kind's node image, pinned or the
## offline one, or may pull it with GMINI_KIND_PULL=1; else the local node), kind, local.
## `make down` with auto deletes whichever exists. The reliability suite has only a local form.
# GMINI_E2E_PROVIDER, which the suites read, is the default when set.
CLUSTER ?= $(or $(GMINI_E2E_PROVIDER),auto)
# CLUSTER=kind brings what kind needs: the project's Docker engine when none answers (make
# docker), and the offline node image (make kind-node-image) unless kind may pull its own
# (GMINI_KIND_PULL=1, or GitHub Actions). auto uses what is there and starts nothing.
KIND_PULLS := $(filter 1,$(GMINI_KIND_PULL))$(filter true,$(GITHUB_ACTIONS))
KIND_PREREQS := $(if $(filter kind,$(CLUSTER)),docker $(if $(KIND_PULLS),,kind-node-image))

## e2e: create a cluster (CLUSTER), deploy, test, delete it
e2e: $(KIND_PREREQS) registry flux kueue
	cd tools && GMINI_E2E_PROVIDER=$(CLUSTER) $(GO) test -tags e2e -count=1 -v -timeout 40m ./e2e/

## reliability: bad input, 1,000 concurrent POSTs, API server outage, SIGTERM, RBAC and
## Pod Security, against a real API server (a local cluster without a node)
# It has no kind form: checked before anything is built.
.PHONY: reliability-provider
reliability-provider:
	@if [ "$(CLUSTER)" = kind ]; then echo "make reliability: the suite stops and restarts the API server process of a local cluster without a node, which kind cannot do; run it with CLUSTER=local or auto (both run it locally)" >&2; exit 2; fi
reliability: reliability-provider kube
	cd tools && $(GO) test -tags e2e -count=1 -v -timeout 30m ./reliability/

## store-test: the history store's conformance suite against SQLite and a real PostgreSQL
## (Debian's, started and stopped here), after the tests of that harness itself
.PHONY: store-test
store-test:
	cd tools && $(GO) test -count=1 ./postgres/ ./cmd/with-postgres/
	cd tools && $(GO) run ./cmd/with-postgres -- sh -c 'cd ../apps/backend && $(GO) test -count=1 ./internal/history/...'

## check-clean: the test clusters left no network namespace, process, mount or cgroup (in any
## cgroup v1 hierarchy, or the v2 unified one) behind, and no
## registry, Flux controller, Kueue controller, PostgreSQL server or kube-router rule or set;
## nor the project's Docker engine (make docker): no dockerd, bridge, network, mount, chain or cgroup
TEST_CLUSTERS := gmini-e2e gmini-rel itest itest-api
check-clean:
	@left=""; for c in $(TEST_CLUSTERS); do \
	  ip netns list 2>/dev/null | grep -q "^gmini-$$c\b" && left="$$left netns:gmini-$$c"; \
	  [ -e /run/gmini-clusters/gmini-$$c ] && left="$$left owner-record:gmini-$$c"; \
	  pgrep -f "(cluster/|/tmp/gmini-)$$c[/-]" >/dev/null && left="$$left processes:$$c"; \
	  grep -Eq "(/cluster/|/tmp/gmini-)$$c[/-]" /proc/self/mountinfo && left="$$left mounts:$$c"; \
	  pgrep -f "registry serve .*/cluster/$$c/" >/dev/null && left="$$left registry:$$c"; \
	  for d in /sys/fs/cgroup/gmini-$$c /sys/fs/cgroup/*/gmini-$$c; do \
	    [ -d "$$d" ] && left="$$left cgroup:$$d"; \
	  done; \
	done; \
	for pid in $$(pgrep -f '^/((source|kustomize)-controller|manager --config=/controller_manager_config.yaml)( |$$)'); do \
	  parent=$$(tr '\0' ' ' < /proc/$$(ps -o ppid= -p $$pid | tr -d ' ')/cmdline 2>/dev/null); \
	  case "$$parent" in \
	    *containerd-shim*) for c in $(TEST_CLUSTERS); do \
	      case "$$parent" in *"/cluster/$$c/"*) left="$$left controller:$$c";; esac; done;; \
	    *) left="$$left controller:orphan-$$pid";; \
	  esac; \
	done; \
	pgrep -f '[/]bin/postgres -D \S*(/_output/postgres/|/gmini-)' >/dev/null && left="$$left postgres"; \
	iptables-save -t filter 2>/dev/null | grep -q -- "-j KUBE-ROUTER-" && left="$$left host-iptables:kube-router"; \
	pgrep -f "[_]output/docker/" >/dev/null && left="$$left docker-processes"; \
	ip -o link show gminidock0 >/dev/null 2>&1 && left="$$left docker-bridge:gminidock0"; \
	ip -4 -o addr show 2>/dev/null | grep -Eq " br-[0-9a-f]+ +inet 198\.18\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\." && left="$$left docker-networks"; \
	grep -q "/[_]output/docker/" /proc/self/mountinfo && left="$$left docker-mounts"; \
	iptables-save 2>/dev/null | grep -Eq "gminidock0|198\.18\.64\.0/18" && left="$$left docker-iptables"; \
	for d in /sys/fs/cgroup/*/gmini-docker /sys/fs/cgroup/gmini-docker; do [ -d "$$d" ] && left="$$left cgroup:$$d"; done; \
	ipset list -n 2>/dev/null | grep -Eq "^(inet6:)?KUBE-(SRC|DST)-" && left="$$left host-ipsets:kube-router"; \
	if [ -n "$$left" ]; then echo "left behind:$$left"; exit 1; fi; echo "nothing left behind"

## up: a cluster with gmini deployed and one experiment run; stays up until `make down`
up: $(KIND_PREREQS)
	cd tools && $(GO) run ./cmd/gmini-dev -provider $(CLUSTER) up

## proxy: the backend on 127.0.0.1:8080 (after make up)
proxy:
	cd tools && $(GO) run ./cmd/gmini-dev -provider $(CLUSTER) proxy

## down: delete the cluster that `make up` made, and all it left behind, then stop the
## project's Docker engine if `make docker` started one
down:
	cd tools && $(GO) run ./cmd/gmini-dev -provider $(CLUSTER) down
	cd tools && $(GO) run ./cmd/gmini-docker stop

## kind-node-image: kind's node image assembled offline (tools/kindnode), for kind where its
## pinned kindest/node cannot be pulled: a Debian root file system (debootstrap from Debian's
## mirror) with kind's base files, Debian's containerd, runc and CNI plugins, kubelet (the kube
## binary), kubeadm and kubectl of the same Kubernetes version, and the control-plane images
## built with go-containerregistry; loaded into the Docker engine (make docker's, started if none
## answers) as gmini.local/kind-node:<version>-gmini. Cached: measured here 2 min (debootstrap),
## 1 min 44 s (kubeadm, kubectl), 1 min (assembly, load) beyond the kube build; warm seconds.
## Then CLUSTER=auto picks kind; no CoreDNS (not built), as on the local node.
.PHONY: kind-node-image
kind-node-image:
	cd tools && $(GO) run ./cmd/kind-node-image

## docker: a Docker engine of the project's own for kind (tools/dockerd), on a machine with
## none: Debian's docker.io (installed if missing), dockerd with its data under _output/docker,
## its bridge gminidock0 and networks in 198.18.64.0/18, no forwarding or masquerading (nothing
## leaves the machine), and gmini-runc as its runtime where the kernel's bounding set lacks a
## capability privileged containers get. Nothing when an engine answers already.
## docker-stop: stop it and remove its processes, mounts, bridges, iptables chains, cgroups
## docker-test: start it, run privileged containers from images built here, stop it, check
.PHONY: docker docker-stop docker-test
docker:
	cd tools && $(GO) run ./cmd/gmini-docker start
docker-stop:
	cd tools && $(GO) run ./cmd/gmini-docker stop
docker-test:
	cd tools && $(GO) test -tags dockerd -count=1 -v -timeout 10m ./dockerd/

## bench: spawn throughput against the ceiling, end-to-end latency and cost, as Markdown tables
bench:
	cd tools && $(GO) run ./bench

clean: down
	rm -rf _output
