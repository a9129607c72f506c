#!/usr/bin/env bash
# The end-to-end test of hack/e2e-kind.sh on Talos Linux in Docker
# (`talosctl cluster create`, one control-plane node and one worker).
#
#   hack/e2e-talos.sh       needs: docker (a running engine), talosctl, kubectl
#
# Talos nodes cannot side-load images the way `kind load` does, so the images go through
# a throwaway registry: pushed to it at 127.0.0.1:$GPUCTL_E2E_REGISTRY_PORT from the
# host, pulled from it by the nodes over the cluster's Docker network, where the
# registry container is attached at $REGISTRY_IP. Talos' registry-mirror setting maps
# one name onto the other, so the manifests name the image the same way everywhere.
#
# Environment: as hack/e2e-kind.sh, plus GPUCTL_E2E_REGISTRY_PORT (default 5005),
# GPUCTL_E2E_CIDR (the cluster's network, default 10.5.0.0/24) and TALOS_VERSION
# (optional: the node image tag, default talosctl's own).
set -euo pipefail

REGISTRY_PORT="${GPUCTL_E2E_REGISTRY_PORT:-5005}"
CIDR="${GPUCTL_E2E_CIDR:-10.5.0.0/24}"
NETWORK_PREFIX="${CIDR%.*}"          # 10.5.0
CONTROL_PLANE_IP="$NETWORK_PREFIX.2" # talosctl numbers nodes from .2
REGISTRY_IP="$NETWORK_PREFIX.250"
: "${GPUCTL_E2E_IMAGE:=127.0.0.1:$REGISTRY_PORT/gpuctl/gpuctl}"
: "${GPUCTL_E2E_SIM_IMAGE:=127.0.0.1:$REGISTRY_PORT/gpuctl/gpuctl-sim}"
export GPUCTL_E2E_IMAGE GPUCTL_E2E_SIM_IMAGE

# shellcheck source=hack/e2e-kind.sh
source "$(dirname "${BASH_SOURCE[0]}")/e2e-kind.sh"

REGISTRY="$CLUSTER-registry"

talos() { talosctl --talosconfig "$WORK/talosconfig" "$@"; }

check_prerequisites() {
  need docker talosctl kubectl
  docker info >/dev/null 2>&1 ||
    die "cannot reach the Docker engine: is it running, and may this user use it?"
  [[ "$(uname -s)" == Linux ]] ||
    die "the nodes must be reachable at $CONTROL_PLANE_IP: Talos-in-Docker e2e runs on Linux only"
}

create_cluster() {
  log "starting registry $REGISTRY on 127.0.0.1:$REGISTRY_PORT"
  docker run -d --name "$REGISTRY" -p "127.0.0.1:$REGISTRY_PORT:5000" \
    docker.io/library/registry:2 >/dev/null

  log "creating Talos cluster $CLUSTER on $CIDR"
  local args=(
    cluster create --provisioner docker --name "$CLUSTER" --cidr "$CIDR"
    --controlplanes 1 --workers 1 --state "$WORK/talos-state" --skip-kubeconfig
    --registry-mirror "127.0.0.1:$REGISTRY_PORT=http://$REGISTRY_IP:5000"
    --wait-timeout 10m
  )
  if [[ -n "${TALOS_VERSION:-}" ]]; then
    args+=(--image "ghcr.io/siderolabs/talos:$TALOS_VERSION")
  fi
  talos "${args[@]}"
  talos kubeconfig "$KUBECONFIG_FILE" --nodes "$CONTROL_PLANE_IP" --force

  # The cluster's Docker network exists now: let the nodes reach the registry.
  docker network connect --ip "$REGISTRY_IP" "$CLUSTER" "$REGISTRY"
}

load_images() {
  log "pushing images to $REGISTRY"
  docker push "$(operator_ref)"
  docker push "$(sim_ref)"
}

delete_cluster() {
  log "deleting Talos cluster $CLUSTER and registry $REGISTRY"
  # The registry first: a network with a container still attached cannot be removed.
  docker rm -f "$REGISTRY" >/dev/null 2>&1
  talos cluster destroy --provisioner docker --name "$CLUSTER" --state "$WORK/talos-state"
}

main "$@"
