#!/usr/bin/env bash
# Builds the Containerfile's base image from Debian packages, without pulling from a
# container registry: mmdebstrap of Debian $GPUCTL_BASE_SUITE (minbase) with Debian's
# python3 (3.11 in bookworm, the version of the default python:3.11-slim), imported into
# Buildah's local storage as $GPUCTL_BASE_IMAGE. `hack/image/build.sh` passes it as the
# PYTHON_IMAGE build argument; nothing else in the Containerfile changes.
#
# Like python:3.11-slim it puts `python` and `pip` first on PATH: a virtual environment in
# /opt/python (Debian's own pip refuses system-wide installs, PEP 668), and sets LANG.
#
#   hack/image/base.sh            # build unless $GPUCTL_BASE_IMAGE exists
#   hack/image/base.sh --force    # build again (e.g. for Debian security updates)
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"

force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) die "usage: $0 [--force]" ;;
esac
need mmdebstrap buildah
if ! $force && image_exists "$GPUCTL_BASE_IMAGE"; then
  log "$GPUCTL_BASE_IMAGE exists (--force builds it again)"
  exit 0
fi

MIRROR=${GPUCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${GPUCTL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
VENV=/opt/python

work=$(mktemp -d)
ctr=
cleanup() {
  if [ -n "$ctr" ]; then "${BUILDAH[@]}" rm "$ctr" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

log "mmdebstrap $GPUCTL_BASE_SUITE (minbase + python3) from $MIRROR"
# merged-usr hook: the /usr merge without the usrmerge package (and the perl it pulls in).
# No documentation or translations, as in the slim images. The venv is made with the
# image's own python3; python3-venv and the wheels it bundles go afterwards. "$1" in a
# hook is the chroot, expanded by mmdebstrap: hence the single quotes.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook="chroot \"\$1\" python3 -m venv $VENV" \
  --customize-hook="chroot \"\$1\" $VENV/bin/python -m pip --version" \
  --customize-hook='chroot "$1" dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl' \
  --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
  "$GPUCTL_BASE_SUITE" "$work/rootfs.tar" \
  "deb $MIRROR $GPUCTL_BASE_SUITE main" \
  "deb $MIRROR $GPUCTL_BASE_SUITE-updates main" \
  "deb $SECURITY_MIRROR $GPUCTL_BASE_SUITE-security main"

log "importing into Buildah ($GPUCTL_STORAGE_DRIVER) as $GPUCTL_BASE_IMAGE"
ctr=$("${BUILDAH[@]}" from scratch)
"${BUILDAH[@]}" add "$ctr" "$work/rootfs.tar" /
"${BUILDAH[@]}" config \
  --env "PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --env LANG=C.UTF-8 \
  --cmd python3 \
  --label "org.opencontainers.image.description=Debian $GPUCTL_BASE_SUITE minbase with python3 (gpuctl's local PYTHON_IMAGE)" \
  "$ctr"
"${BUILDAH[@]}" commit --rm "$ctr" "$GPUCTL_BASE_IMAGE" >/dev/null
ctr=
"${BUILDAH[@]}" images "$GPUCTL_BASE_IMAGE"
