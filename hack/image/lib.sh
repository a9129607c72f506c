# shellcheck shell=bash
# Shared settings of hack/image/*.sh (sourced, not run). Every name can be overridden
# from the environment; `make image` and `make image-sim` use the defaults.

# Daemonless and rootless-friendly: Buildah with chroot isolation on the vfs driver
# works where no container engine, overlay mounts or user namespaces are available.
GPUCTL_STORAGE_DRIVER=${GPUCTL_STORAGE_DRIVER:-vfs}
GPUCTL_ISOLATION=${GPUCTL_ISOLATION:-chroot}
BUILDAH=(buildah --storage-driver "$GPUCTL_STORAGE_DRIVER")

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# One version source: gpuctl/__init__.py (setup.cfg reads it too), so the tags are the
# ones manifests/manager/deployment.yaml and manifests/sim name.
GPUCTL_VERSION=${GPUCTL_VERSION:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO_ROOT/gpuctl/__init__.py")}
GPUCTL_IMAGE=${GPUCTL_IMAGE:-ghcr.io/gpuctl/gpuctl:v$GPUCTL_VERSION}
GPUCTL_SIM_IMAGE=${GPUCTL_SIM_IMAGE:-ghcr.io/gpuctl/gpuctl-sim:v$GPUCTL_VERSION}

# The local stand-in for the Containerfile's default PYTHON_IMAGE (python:3.11-slim):
# Debian's own Python 3.11, which is Debian 12 (bookworm)'s python3.
GPUCTL_BASE_SUITE=${GPUCTL_BASE_SUITE:-bookworm}
GPUCTL_BASE_IMAGE=${GPUCTL_BASE_IMAGE:-localhost/gpuctl-python:3.11-$GPUCTL_BASE_SUITE}

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() {
  log "$*"
  exit 1
}
# Each tool is a Debian package of the same name: a fresh machine gets it from apt when
# we are root (as CI is); otherwise say what to install.
need() {
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} from Debian"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; }; then
      die "apt-get install ${missing[*]} failed"
    fi
  else
    die "${missing[*]} not found (Debian: apt-get install ${missing[*]})"
  fi
}
image_exists() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }
