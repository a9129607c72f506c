#!/usr/bin/env bash
# Checks a built gpuctl image from the inside, without a container engine: Buildah runs
# each command in the image with chroot isolation (`podman run` cannot run containers on
# this machine kind: crun fails to set rlimits, and the cgroup hierarchy is hybrid).
#
#   hack/image/check.sh [runtime]   # $GPUCTL_IMAGE, the operator (make image-smoke)
#   hack/image/check.sh sim         # $GPUCTL_SIM_IMAGE, the simulated clouds
#
# Both: the image config runs `gpuctl` as the numeric non-root user 65532:65532, and so
# do commands inside it; no compiler or build tool; no test tools (pytest, hypothesis);
# gpuctl installed from its wheel (no source tree, no wheels left); `gpuctl --help`.
# runtime: no simulator dependency (openapi-core) either, `gpuctl run --help`, and
#   `gpuctl run` starts against a real API server and answers /readyz with 200: the local
#   control plane (`gpuctl controlplane up` from .venv, needs `make install controlplane`)
#   with the CRDs and namespace gpuctl-system applied, or the cluster of
#   $GPUCTL_CHECK_KUBECONFIG (CRDs and namespace must exist there; a self-contained
#   kubeconfig: it is the only file mounted into the image).
# sim: openapi-core present, and `gpuctl sim` serves its control API.
# Exits 1 after all checks if any failed.
set -euo pipefail
# shellcheck source=hack/image/lib.sh
source "$(dirname "$0")/lib.sh"

target=${1:-runtime}
case "$target" in
  runtime) image=$GPUCTL_IMAGE ;;
  sim) image=$GPUCTL_SIM_IMAGE ;;
  *) die "usage: $0 [runtime|sim]" ;;
esac
need buildah curl python3
image_exists "$image" || die "no image $image in Buildah's $GPUCTL_STORAGE_DRIVER storage: run hack/image/build.sh $target"

work=$(mktemp -d)
ctr=
cp_pid=
run_pid=
stop() { # PID: SIGTERM, then SIGKILL after 20 s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "pid $pid ignored SIGTERM for 20 s: SIGKILL (#$i)"
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  if [ -n "$run_pid" ]; then stop "$run_pid"; fi
  if [ -n "$cp_pid" ]; then stop "$cp_pid"; fi
  if [ -n "$ctr" ]; then "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

failed=0
pass() { log "ok   $*"; }
fail() {
  log "FAIL $*"
  failed=1
}
expect() { # WHAT ACTUAL WANTED
  if [ "$2" = "$3" ]; then pass "$1: $2"; else fail "$1: got '$2', want '$3'"; fi
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # URL SECONDS [PID]: 0 once URL answers 200
  local i
  for i in $(seq 1 $(($2 * 2))); do
    if curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; then return 0; fi
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    sleep 0.5
  done
  log "no 200 from $1 after $2 s (#$i)"
  return 1
}

log "checking $image ($target)"
config() { # KEY: the image config's KEY, as JSON
  "${BUILDAH[@]}" inspect --type image "$image" \
    | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"].get(sys.argv[1])))' "$1"
}
expect "image user" "$(config User)" '"65532:65532"'
expect "entrypoint" "$(config Entrypoint)" '["gpuctl"]'
if [ "$target" = runtime ]; then command=run; else command=sim; fi
expect "command" "$(config Cmd)" "[\"$command\"]"

ctr=$("${BUILDAH[@]}" from --pull-never "$image")
# Runs as the image's user (buildah run applies the image's USER), on the host network.
in_image() { "${BUILDAH[@]}" run --isolation "$GPUCTL_ISOLATION" --network host "$@"; }
# LOG ARGS...: in_image in the background, output to LOG; $! is buildah's own pid (exec),
# so stop() reaches it, and buildah ends the command in the image with it.
in_image_bg() {
  local out=$1
  shift
  (exec "${BUILDAH[@]}" run --isolation "$GPUCTL_ISOLATION" --network host "$@" >"$out" 2>&1) &
}

# shellcheck disable=SC2016 # expanded in the image's shell
expect "uid:gid inside" "$(in_image "$ctr" -- sh -c 'echo "$(id -u):$(id -g)"' || true)" "65532:65532"
# shellcheck disable=SC2016 # expanded in the image's shell
tools=$(in_image "$ctr" -- sh -c '
  for t in gcc cc c++ g++ clang cpp tcc ld as make cmake rustc go; do
    command -v "$t" >/dev/null 2>&1 && printf "%s " "$t"
  done; true')
expect "compilers and build tools" "${tools:-none}" "none"

# Modules that must not (and, in the sim image, must) be importable.
modules() { # NAME...: the importable ones
  in_image "$ctr" -- python -c '
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m)) or "none")' "$@"
}
expect "test tools" "$(modules pytest _pytest hypothesis pytest_asyncio ruff mypy)" "none"
if [ "$target" = runtime ]; then
  expect "simulator dependencies" "$(modules openapi_core jsonschema)" "none"
else
  expect "simulator dependencies" "$(modules openapi_core)" "openapi_core"
fi
where=$(in_image "$ctr" -- python -c 'import gpuctl; print(gpuctl.__file__)' || true)
case "$where" in
  */site-packages/gpuctl/__init__.py) pass "gpuctl installed from its wheel: $where" ;;
  *) fail "gpuctl imported from $where, not site-packages" ;;
esac
expect "build leftovers (/wheels, /src)" \
  "$(in_image "$ctr" -- sh -c 'ls -d /wheels /src 2>/dev/null || echo none')" "none"
expect "gpuctl --version" "$(in_image "$ctr" -- gpuctl --version || true)" "gpuctl $GPUCTL_VERSION"
if in_image "$ctr" -- gpuctl --help >/dev/null; then pass "gpuctl --help"; else fail "gpuctl --help"; fi
if in_image "$ctr" -- gpuctl "$command" --help >/dev/null; then
  pass "gpuctl $command --help"
else
  fail "gpuctl $command --help"
fi

if [ "$target" = runtime ]; then
  # `gpuctl run` inside the image against a real API server (loopback, host network).
  mkdir -m 755 "$work/kube"
  if [ -n "${GPUCTL_CHECK_KUBECONFIG:-}" ]; then
    cp "$GPUCTL_CHECK_KUBECONFIG" "$work/kube/config"
  else
    host_gpuctl=$REPO_ROOT/.venv/bin/gpuctl
    kubectl=${KUBEBUILDER_ASSETS:-$REPO_ROOT/bin/k8s}/kubectl
    [ -x "$host_gpuctl" ] && [ -x "$kubectl" ] || die "need $host_gpuctl and $kubectl: make install controlplane"
    "$host_gpuctl" controlplane up --dir "$work/cp" >"$work/cp.out" 2>"$work/cp.err" &
    cp_pid=$!
    for _ in $(seq 1 120); do
      if [ -s "$work/cp.out" ] || ! kill -0 "$cp_pid" 2>/dev/null; then break; fi
      sleep 0.5
    done
    kubeconfig=$(head -n 1 "$work/cp.out")
    [ -f "$kubeconfig" ] || die "control plane did not start: $(tail -n 20 "$work/cp.err")"
    "$kubectl" --kubeconfig "$kubeconfig" apply -k "$REPO_ROOT/manifests/crd" >/dev/null
    "$kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Established --timeout=60s \
      crd/gpunoderequests.gpuctl.io crd/gpuproviders.gpuctl.io >/dev/null
    "$kubectl" --kubeconfig "$kubeconfig" create namespace gpuctl-system >/dev/null
    cp "$kubeconfig" "$work/kube/config"
  fi
  chmod 644 "$work/kube/config" # user 65532 reads it
  port=$(free_port)
  in_image_bg "$work/operator.log" --volume "$work/kube:/kube:ro" "$ctr" -- gpuctl run \
    --kubeconfig /kube/config --cluster-name image-check --namespace gpuctl-system \
    --health-host 127.0.0.1 --health-port "$port"
  run_pid=$!
  if wait_http "http://127.0.0.1:$port/readyz" 90 "$run_pid"; then
    pass "gpuctl run: /readyz 200 ($(curl -s "http://127.0.0.1:$port/readyz?verbose" | tr '\n' ' '))"
    metrics=$(curl -fsS "http://127.0.0.1:$port/metrics" || true)
    if grep -q '^gpuctl_' <<<"$metrics"; then
      pass "gpuctl run: /metrics has gpuctl_ metrics"
    else
      fail "gpuctl run: no gpuctl_ metrics"
    fi
  else
    fail "gpuctl run did not become ready; its log:"
    sed 's/^/  | /' "$work/operator.log" >&2
  fi
else
  # `gpuctl sim` inside the image: its control API answers with the clouds' endpoints.
  ports=() && for _ in 1 2 3 4; do ports+=("$(free_port)"); done
  in_image_bg "$work/sim.log" "$ctr" -- gpuctl sim -o json \
    --ports "lambda=${ports[0]},runpod=${ports[1]},paperspace=${ports[2]},control=${ports[3]}"
  run_pid=$!
  if wait_http "http://127.0.0.1:${ports[3]}/" 60 "$run_pid" \
    && grep -q '"endpoints"' <<<"$(curl -fsS "http://127.0.0.1:${ports[3]}/")"; then
    pass "gpuctl sim: control API serves the endpoints"
  else
    fail "gpuctl sim did not serve; its log:"
    sed 's/^/  | /' "$work/sim.log" >&2
  fi
fi
if [ -n "$run_pid" ]; then
  stop "$run_pid"
  run_pid=
fi

"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image" | sed 's/^/size: /' >&2
if [ "$failed" != 0 ]; then die "$image: some checks failed"; fi
log "$image: all checks passed"
