#!/usr/bin/env bash
# Builds gpuctl's images from the Containerfile with Buildah (no Docker engine, no
# daemon): chroot isolation on the vfs storage driver, the base image made from Debian
# packages by hack/image/base.sh and passed as the PYTHON_IMAGE build argument. The
# Containerfile is the one `docker build` uses with its default base.
#
#   hack/image/build.sh [runtime]   # the operator: $GPUCTL_IMAGE (make image)
#   hack/image/build.sh sim         # the simulated clouds: $GPUCTL_SIM_IMAGE (make image-sim)
#
# pip in the builder stage downloads from PyPI (or $PIP_INDEX_URL). If pip on this host
# trusts an extra CA bundle (PIP_CERT or pip's config `global.cert`, as behind a
# TLS-inspecting proxy), the build mounts that bundle for pip in every RUN step: it is
# never part of an image layer.
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"

target=${1:-runtime}
case "$target" in
  runtime) image=$GPUCTL_IMAGE ;;
  sim) image=$GPUCTL_SIM_IMAGE ;;
  *) die "usage: $0 [runtime|sim]" ;;
esac
need buildah
"$(dirname "$0")/base.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_opts=()
ca=${PIP_CERT:-}
if [ -z "$ca" ] && command -v python3 >/dev/null; then
  ca=$(python3 -m pip config get global.cert 2>/dev/null || true)
fi
if [ -n "$ca" ] || [ -n "${PIP_INDEX_URL:-}" ]; then
  # pip reads /etc/xdg/pip/pip.conf (its site-wide configuration) in any environment.
  mkdir "$work/pip"
  {
    echo "[global]"
    if [ -n "$ca" ]; then
      [ -r "$ca" ] || die "pip's CA bundle $ca is not readable"
      cp "$ca" "$work/pip/ca.crt"
      echo "cert = /etc/xdg/pip/ca.crt"
    fi
    if [ -n "${PIP_INDEX_URL:-}" ]; then echo "index-url = $PIP_INDEX_URL"; fi
  } >"$work/pip/pip.conf"
  build_opts+=(--volume "$work/pip:/etc/xdg/pip:ro")
fi

log "building target $target as $image (base $GPUCTL_BASE_IMAGE)"
start=$SECONDS
# --layers keeps the builder stage cached, so the second image reuses its wheels.
"${BUILDAH[@]}" bud \
  --isolation "$GPUCTL_ISOLATION" \
  --layers \
  --pull=never \
  --build-arg "PYTHON_IMAGE=$GPUCTL_BASE_IMAGE" \
  --target "$target" \
  --file "$REPO_ROOT/Containerfile" \
  --tag "$image" \
  "${build_opts[@]}" \
  "$REPO_ROOT"
log "built $image in $((SECONDS - start)) s"
"${BUILDAH[@]}" images "$image"
