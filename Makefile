# gpuctl — developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
K8S_BIN := bin/k8s
CP_DIR := hack/controlplane
NA_DIR := hack/nodeagent
CP_SRCS := $(CP_DIR)/go.mod $(CP_DIR)/go.sum $(wildcard $(CP_DIR)/*/main.go) Makefile \
  $(NA_DIR)/go.mod $(NA_DIR)/go.sum $(wildcard $(NA_DIR)/*/*.go)
# envtest's KUBEBUILDER_ASSETS can stand in for these three ...
CP_ENVTEST_PKGS := ./kube-apiserver ./etcd ./kubectl
# ... never for these, which always build into bin/k8s.
CP_CLUSTER_PKGS := ./kube-controller-manager ./kube-scheduler ./kubelet
# Must match k8s.io/kubernetes in hack/controlplane/go.mod (a unit test checks).
K8S_VERSION := v1.37.2
K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
VERSION_PKGS := k8s.io/component-base/version k8s.io/client-go/pkg/version
CP_LDFLAGS := -s -w $(foreach p,$(VERSION_PKGS),-X $(p).gitVersion=$(K8S_VERSION) \
  -X $(p).gitMajor=1 -X $(p).gitMinor=$(K8S_MINOR) -X $(p).gitTreeState=clean)
PYTEST_ARGS ?=
NODE_TOOLS := hack/node_modules/.installed
CODEGEN := PYTHONPATH=hack $(BIN)/python -m codegen

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.installed ## create .venv and install gpuctl with test and dev extras

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[sim,test,dev]'
	touch $@

.PHONY: controlplane
controlplane: ## build the control plane, kubelet and gpuctl-node-agent into bin/k8s (see docs/development.md)
	@if [ -n "$$KUBEBUILDER_ASSETS" ] && [ -x "$$KUBEBUILDER_ASSETS/kube-apiserver" ] \
	    && [ -x "$$KUBEBUILDER_ASSETS/etcd" ] && [ -x "$$KUBEBUILDER_ASSETS/kubectl" ]; then \
	  echo "using etcd, kube-apiserver, kubectl from KUBEBUILDER_ASSETS=$$KUBEBUILDER_ASSETS"; \
	  $(MAKE) --no-print-directory $(K8S_BIN)/.built-cluster; \
	else \
	  $(MAKE) --no-print-directory $(K8S_BIN)/.built; \
	fi

# One `go build` per module: the packages of a module share one build, and the two
# modules select the same versions (hack/nodeagent/tools.go), so they share the cache.
$(K8S_BIN)/.built: $(CP_SRCS)
	mkdir -p $(K8S_BIN)
	cd $(CP_DIR) && GOFLAGS=-mod=readonly go build -trimpath -ldflags '$(CP_LDFLAGS)' -o ../../$(K8S_BIN)/ $(CP_ENVTEST_PKGS) $(CP_CLUSTER_PKGS)
	cd $(NA_DIR) && GOFLAGS=-mod=readonly go build -trimpath -ldflags '$(CP_LDFLAGS)' -o ../../$(K8S_BIN)/ ./gpuctl-node-agent
	touch $@ $(K8S_BIN)/.built-cluster

$(K8S_BIN)/.built-cluster: $(CP_SRCS)
	mkdir -p $(K8S_BIN)
	cd $(CP_DIR) && GOFLAGS=-mod=readonly go build -trimpath -ldflags '$(CP_LDFLAGS)' -o ../../$(K8S_BIN)/ $(CP_CLUSTER_PKGS)
	cd $(NA_DIR) && GOFLAGS=-mod=readonly go build -trimpath -ldflags '$(CP_LDFLAGS)' -o ../../$(K8S_BIN)/ ./gpuctl-node-agent
	touch $@

.PHONY: lint
lint: install ## ruff, mypy --strict on gpuctl/, layering check, shellcheck
	$(BIN)/ruff check gpuctl tests hack
	$(BIN)/ruff format --check gpuctl tests hack
	$(BIN)/mypy --strict gpuctl
	$(BIN)/python hack/check_layers.py
	$(BIN)/shellcheck --external-sources hack/*.sh hack/image/*.sh

.PHONY: fmt
fmt: install ## format and auto-fix
	$(BIN)/ruff format gpuctl tests hack
	$(BIN)/ruff check --fix gpuctl tests hack

# Debian packages the tests use: cloud-init (its `cloud-init schema` checks the user data
# gpuctl renders), util-linux (`unshare`) and procps (`pgrep`) for the simulated machines.
SYSTEM_DEPS := cloud-init util-linux procps

.PHONY: system-deps
system-deps: ## apt-get install the Debian packages the tests use, if missing (as root)
	@missing=""; for p in $(SYSTEM_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "missing Debian packages:$$missing (tests that need them are skipped)"; \
	fi

# Prometheus' promtool (tests/integration/test_prometheus.py: `check rules`, `test rules`,
# `check metrics` on a live scrape), built from the Go module proxy like the control plane:
# only cmd/promtool, without the service-discovery plugins (remove_all_sd). Cold (empty Go
# caches) about 4 CPU-minutes on 2 cores, then nothing (docs/development.md).
PROMTOOL_DIR := hack/promtool
PROMTOOL := bin/promtool
# github.com/prometheus/prometheus v0.316.0 in hack/promtool/go.mod is Prometheus 3.16.0.
PROMTOOL_VERSION := 3.16.0

.PHONY: promtool
promtool: $(PROMTOOL) ## build Prometheus' promtool into bin/ (cmd/promtool only)

$(PROMTOOL): $(PROMTOOL_DIR)/go.mod $(PROMTOOL_DIR)/go.sum
	mkdir -p $(dir $@)
	cd $(PROMTOOL_DIR) && GOFLAGS=-mod=readonly go build -trimpath -tags remove_all_sd \
	  -ldflags '-s -w -X github.com/prometheus/common/version.Version=$(PROMTOOL_VERSION)' \
	  -o ../../$@ github.com/prometheus/prometheus/cmd/promtool

# The browser tests (tests/browser) drive Debian's chromium with playwright-core from npm
# (Playwright's own browser download does not work here). Both pinned; a chromium no longer
# served at the pinned version (Debian security updates replace it) falls back to the
# current one, and says so.
CHROMIUM_VERSION := 156.0.8078.108-1~deb12u1
BROWSER_TOOLS := hack/browser/node_modules/.installed

.PHONY: browser-deps
browser-deps: $(BROWSER_TOOLS) ## apt-get install chromium and npm ci playwright-core (pinned) for tests/browser
	@if dpkg -s chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium $(CHROMIUM_VERSION) from Debian"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium=$(CHROMIUM_VERSION) chromium-common=$(CHROMIUM_VERSION) >/dev/null \
	  || { echo "chromium $(CHROMIUM_VERSION) is not served any more: installing Debian's current chromium"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; \
	else \
	  echo "chromium is missing and this is not root: tests/browser are skipped (fail under CI)"; \
	fi

$(BROWSER_TOOLS): hack/browser/package.json hack/browser/package-lock.json
	npm ci --prefix hack/browser --no-audit --no-fund
	touch $@

.PHONY: dashboard-screenshots
dashboard-screenshots: install controlplane browser-deps ## run tests/browser and keep the page screenshots in docs/img
	GPUCTL_SCREENSHOT_DIR=docs/img $(BIN)/pytest tests/browser $(PYTEST_ARGS)

.PHONY: test
test: install system-deps controlplane promtool browser-deps lint check-generated ## everything CI checks
	$(BIN)/pytest $(PYTEST_ARGS)

DEMO_ARGS ?=
.PHONY: demo
demo: install system-deps controlplane ## control plane + simulated clouds + operator + samples, live (docs/demo.md)
	$(BIN)/gpuctl demo $(DEMO_ARGS)

BENCH_LIFECYCLE_ARGS ?=
BENCH_MEMORY_ARGS ?=

.PHONY: bench
bench: install controlplane ## run the benchmarks of docs/benchmarks.md (minutes; root: real node agents; not in `make test`)
	PYTHONPATH=hack $(BIN)/python -m bench.lifecycle $(BENCH_LIFECYCLE_ARGS)
	PYTHONPATH=hack $(BIN)/python -m bench.memory $(BENCH_MEMORY_ARGS)

CHAOS_SEEDS ?= 1
CHAOS_ARGS ?=

.PHONY: chaos
chaos: install system-deps controlplane ## the chaos suite: 200 requests, cloud faults, SIGKILLs, restarts (minutes; root; not in `make test`; docs/reliability.md)
	for seed in $(CHAOS_SEEDS); do PYTHONPATH=hack $(BIN)/python -m chaos.run --seed $$seed $(CHAOS_ARGS) || exit 1; done

.PHONY: generate
generate: install $(NODE_TOOLS) ## regenerate the 3.0 specs and typed clients from hack/openapi
	$(CODEGEN) generate

.PHONY: check-generated
check-generated: install $(NODE_TOOLS) ## fail if the generated specs or clients are stale
	$(CODEGEN) check

# npm ci again whenever the pinned Node tools change (the stamp dies with node_modules).
$(NODE_TOOLS): hack/package.json hack/package-lock.json
	npm ci --prefix hack --no-audit --no-fund
	touch $@

# Container images without a Docker engine: Buildah (chroot isolation, vfs storage) on a
# Python base made from Debian packages by mmdebstrap (docs/install.md#the-container-image).
# Needs buildah and mmdebstrap (Debian: apt-get install buildah mmdebstrap) and root;
# minutes, so not in `make test` (tests/integration/test_image_smoke.py has a fast part there).
.PHONY: image
image: ## build the operator image ghcr.io/gpuctl/gpuctl:v<version> with Buildah, no Docker
	hack/image/build.sh runtime

.PHONY: image-sim
image-sim: ## build the simulated clouds' image ghcr.io/gpuctl/gpuctl-sim:v<version>
	hack/image/build.sh sim

.PHONY: image-smoke
image-smoke: install controlplane image image-sim ## build both images and check them from the inside
	GPUCTL_IMAGE_TESTS=1 $(BIN)/pytest tests/integration/test_image_smoke.py $(PYTEST_ARGS)

.PHONY: clean
clean: ## remove build outputs (keeps .venv)
	rm -rf bin build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
