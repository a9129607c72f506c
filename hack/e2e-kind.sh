#!/usr/bin/env bash
# End-to-end test of an installed gpuctl on a throwaway kind cluster (Kubernetes in Docker).
#
#   hack/e2e-kind.sh        needs: docker (a running engine), kind, kubectl
#
# 1. create the kind cluster `$GPUCTL_E2E_CLUSTER` (default gpuctl-e2e);
# 2. build the operator image (Containerfile, stage runtime) and the simulator image
#    (stage sim) and load both into the cluster's nodes;
# 3. install gpuctl (manifests/default) and the simulated clouds (manifests/sim) through
#    an overlay that only swaps the images and appends e2e flags;
# 4. apply manifests/sim/e2e (credentials, one GPUProvider per simulated cloud and the
#    GPUNodeRequest e2e-a10), wait for the providers and the request to be Ready and for
#    the Node to carry the request's label and GPU;
# 5. delete the request and wait until it is gone: the finalizer lets go only once the
#    machine is terminated, and the simulated kubelet then deletes the Node.
# On exit the cluster is deleted (GPUCTL_E2E_KEEP=1 keeps it); on failure the state of
# gpuctl's objects and the logs are printed first.
#
# Environment: GPUCTL_E2E_CLUSTER, GPUCTL_E2E_KEEP, GPUCTL_E2E_TIMEOUT (request Ready,
# default 10m), GPUCTL_E2E_IMAGE / GPUCTL_E2E_SIM_IMAGE / GPUCTL_E2E_TAG (image names),
# KIND_NODE_IMAGE (kind's node image, default kind's own).
#
# hack/e2e-talos.sh sources this file and replaces only the cluster functions
# (check_prerequisites, create_cluster, load_images, delete_cluster).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${GPUCTL_E2E_CLUSTER:-gpuctl-e2e}"
TAG="${GPUCTL_E2E_TAG:-e2e}"
OPERATOR_IMAGE="${GPUCTL_E2E_IMAGE:-ghcr.io/gpuctl/gpuctl}"
SIM_IMAGE="${GPUCTL_E2E_SIM_IMAGE:-ghcr.io/gpuctl/gpuctl-sim}"
TIMEOUT="${GPUCTL_E2E_TIMEOUT:-10m}"
REQUEST=e2e-a10
PROVIDERS=(sim-lambda sim-runpod sim-paperspace)
# The API server as the simulated machines (in the simulator's pod) reach it.
JOIN_ENDPOINT=https://kubernetes.default.svc:443
# kustomize accepts bases only by relative path, so the overlay lives in the tree
# (build/ is git-ignored).
OVERLAY="$ROOT/build/e2e-$CLUSTER"
WORK=""
KUBECONFIG_FILE=""

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 ||
      die "$tool is not installed or not in PATH (see docs/install.md#end-to-end-tests)"
  done
}

k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

operator_ref() { printf '%s:%s' "$OPERATOR_IMAGE" "$TAG"; }
sim_ref() { printf '%s:%s' "$SIM_IMAGE" "$TAG"; }

# -- cluster: replaced by hack/e2e-talos.sh ------------------------------------------

check_prerequisites() {
  need docker kind kubectl
  docker info >/dev/null 2>&1 ||
    die "cannot reach the Docker engine: is it running, and may this user use it?"
}

create_cluster() {
  log "creating kind cluster $CLUSTER"
  local args=(create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 3m)
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    args+=(--image "$KIND_NODE_IMAGE")
  fi
  kind "${args[@]}"
}

load_images() {
  log "loading images into $CLUSTER"
  kind load docker-image --name "$CLUSTER" "$(operator_ref)" "$(sim_ref)"
}

delete_cluster() {
  log "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
}

# -- the test ------------------------------------------------------------------------

build_images() {
  # Build from a copy of exactly what the Containerfile copies: Docker does not read
  # .containerignore, and the tree holds .venv and bin/ (hundreds of MB).
  local context="$WORK/context"
  mkdir -p "$context"
  cp -R "$ROOT/Containerfile" "$ROOT/pyproject.toml" "$ROOT/setup.cfg" "$ROOT/README.md" \
    "$ROOT/gpuctl" "$context/"
  find "$context" -name __pycache__ -type d -prune -exec rm -rf {} +
  log "building $(operator_ref) and $(sim_ref)"
  DOCKER_BUILDKIT=1 docker build -f "$context/Containerfile" --target runtime \
    -t "$(operator_ref)" "$context"
  DOCKER_BUILDKIT=1 docker build -f "$context/Containerfile" --target sim \
    -t "$(sim_ref)" "$context"
}

write_overlay() {
  mkdir -p "$OVERLAY"
  # Flags are appended, not replaced: the last --flag=value wins, and the Deployment
  # keeps the one list of flags.
  cat >"$OVERLAY/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../manifests/default
- ../../manifests/sim
images:
- name: ghcr.io/gpuctl/gpuctl
  newName: $OPERATOR_IMAGE
  newTag: $TAG
- name: ghcr.io/gpuctl/gpuctl-sim
  newName: $SIM_IMAGE
  newTag: $TAG
patches:
- target:
    kind: Deployment
    name: gpuctl-controller-manager
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --cluster-name=$CLUSTER
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --join-endpoint=$JOIN_ENDPOINT
EOF
}

deploy() {
  write_overlay
  log "installing gpuctl and the simulated clouds"
  k apply --server-side -k "$OVERLAY"
  k wait --for=condition=Established --timeout=60s \
    crd/gpunoderequests.gpuctl.io crd/gpuproviders.gpuctl.io
  k -n gpuctl-sim rollout status deployment/gpuctl-sim --timeout=3m
  k -n gpuctl-system rollout status deployment/gpuctl-controller-manager --timeout=5m
}

run_request() {
  log "applying providers and request $REQUEST"
  k apply --server-side -k "$ROOT/manifests/sim/e2e"
  local provider
  for provider in "${PROVIDERS[@]}"; do
    k wait --for=condition=Ready "gpr/$provider" --timeout=5m
  done
  k wait --for=condition=Ready "gnr/$REQUEST" --timeout="$TIMEOUT"

  local node label gpus
  node="$(k get gnr "$REQUEST" -o jsonpath='{.status.nodeName}')"
  [[ -n "$node" ]] || die "gnr/$REQUEST is Ready but names no node"
  label="$(k get node "$node" -o jsonpath='{.metadata.labels.gpuctl\.io/request}')"
  [[ "$label" == "$REQUEST" ]] || die "node $node has gpuctl.io/request=$label"
  gpus="$(k get node "$node" -o jsonpath='{.status.capacity.nvidia\.com/gpu}')"
  [[ "$gpus" == 1 ]] || die "node $node has nvidia.com/gpu=$gpus, want 1"
  log "node $node joined for $REQUEST"

  log "deleting $REQUEST: the machine must be terminated before the request goes"
  k delete gnr "$REQUEST" --wait --timeout=5m
  k wait --for=delete "node/$node" --timeout=2m
}

dump_state() {
  log "state at failure"
  k get gpuproviders,gpunoderequests -o yaml || true
  k get nodes -o wide || true
  k get events -A --sort-by=.lastTimestamp || true
  k -n gpuctl-system logs -l app.kubernetes.io/component=controller-manager \
    --all-containers --prefix --tail=300 || true
  k -n gpuctl-sim logs -l app.kubernetes.io/name=gpuctl-sim --tail=300 || true
}

cleanup() {
  local status=$?
  set +e
  if ((status != 0)) && [[ -s "$KUBECONFIG_FILE" ]]; then
    dump_state
  fi
  if [[ "${GPUCTL_E2E_KEEP:-0}" == 1 ]]; then
    log "keeping cluster $CLUSTER (kubeconfig: $KUBECONFIG_FILE)"
  else
    delete_cluster
    rm -rf "$WORK"
  fi
  rm -rf "$OVERLAY"
  exit "$status"
}

main() {
  check_prerequisites
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpuctl-e2e.XXXXXX")"
  KUBECONFIG_FILE="$WORK/kubeconfig"
  trap cleanup EXIT
  create_cluster
  build_images
  load_images
  deploy
  run_request
  log "e2e passed on $CLUSTER"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
