"""Join data for a new machine: a bootstrap token and the rendered bootstrap payload.

Whatever the method (`kubeadm` cloud-init, `k3s`, `talos`, `script`), the payload
carries the join contract variables (docs/providers.md#join-contract):
GPUCTL_API_SERVER, GPUCTL_BOOTSTRAP_TOKEN, GPUCTL_CA_CERT_HASH, GPUCTL_NODE_NAME,
GPUCTL_NODE_LABELS and GPUCTL_NODE_TAINTS — as `export NAME='value'` lines in the
script (for YAML payloads, as `# export ...` comment lines) and as environment
entries for clouds that start a container.

Bootstrap tokens are kube-system Secrets of type `bootstrap.kubernetes.io/token`
(the format kube-apiserver's bootstrap-token authenticator reads), labelled with
the request and attempt so they can be found again after a crash and deleted.
"""

from __future__ import annotations

import base64
import datetime
import enum
import secrets
import shlex
import string
from collections.abc import Mapping

import attrs

from gpuctl.providers.base import JoinData, JoinMethod

TOKEN_GROUP = "system:bootstrappers:gpuctl"
TOKEN_NAMESPACE = "kube-system"
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


class Method(enum.StrEnum):
    KUBEADM = "kubeadm"
    K3S = "k3s"
    TALOS = "talos"
    SCRIPT = "script"


@attrs.frozen
class Token:
    id: str
    secret: str = attrs.field(repr=False)

    @property
    def value(self) -> str:
        return f"{self.id}.{self.secret}"

    @property
    def secret_name(self) -> str:
        return f"bootstrap-token-{self.id}"

    @classmethod
    def generate(cls) -> Token:
        pick = secrets.choice
        return cls(
            "".join(pick(_TOKEN_ALPHABET) for _ in range(6)),
            "".join(pick(_TOKEN_ALPHABET) for _ in range(16)),
        )

    @classmethod
    def from_secret(cls, secret: Mapping[str, object]) -> Token:
        data = secret.get("data") or {}
        assert isinstance(data, Mapping)

        def field(name: str) -> str:
            return base64.b64decode(str(data[name])).decode()

        return cls(field("token-id"), field("token-secret"))


def token_secret(
    token: Token, *, request: str, attempt: int, expires: datetime.datetime
) -> dict[str, object]:
    """The kube-system Secret that makes `token` valid until `expires`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {
            "name": token.secret_name,
            "namespace": TOKEN_NAMESPACE,
            "labels": {"gpuctl.io/request": request, "gpuctl.io/attempt": str(attempt)},
        },
        "stringData": {
            "token-id": token.id,
            "token-secret": token.secret,
            "expiration": expires.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": TOKEN_GROUP,
            "description": f"gpuctl join token for {request} attempt {attempt}",
        },
    }


@attrs.frozen
class JoinParams:
    api_server: str  # https://host:port reachable from the cloud
    token: Token
    ca_cert_hash: str  # sha256:<hex>
    node_name: str
    labels: Mapping[str, str]
    taints: tuple[str, ...] = ()  # key=value:Effect
    kubernetes_version: str = ""
    extra_args: tuple[str, ...] = ()

    def variables(self) -> dict[str, str]:
        return {
            "GPUCTL_API_SERVER": self.api_server,
            "GPUCTL_BOOTSTRAP_TOKEN": self.token.value,
            "GPUCTL_CA_CERT_HASH": self.ca_cert_hash,
            "GPUCTL_NODE_NAME": self.node_name,
            "GPUCTL_NODE_LABELS": ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())),
            "GPUCTL_NODE_TAINTS": ",".join(self.taints),
        }


def _exports(variables: Mapping[str, str], prefix: str = "") -> str:
    return "".join(f"{prefix}export {k}={shlex.quote(v)}\n" for k, v in variables.items())


def _kubeadm_commands(params: JoinParams) -> str:
    """What a kubeadm node runs once /etc/gpuctl/join.env exists: the kubelet's extra
    flags as the kubeadm drop-in reads them (/etc/default/kubelet), then `kubeadm join`."""
    extra = " ".join(shlex.quote(a) for a in params.extra_args)
    return (
        ". /etc/gpuctl/join.env\n"
        'KUBELET_EXTRA_ARGS="--node-labels=$GPUCTL_NODE_LABELS"\n'
        'if [ -n "$GPUCTL_NODE_TAINTS" ]; then\n'
        '  KUBELET_EXTRA_ARGS="$KUBELET_EXTRA_ARGS --register-with-taints=$GPUCTL_NODE_TAINTS"\n'
        "fi\n"
        'echo "KUBELET_EXTRA_ARGS=$KUBELET_EXTRA_ARGS" > /etc/default/kubelet\n'
        'kubeadm join "${GPUCTL_API_SERVER#https://}"'
        ' --token "$GPUCTL_BOOTSTRAP_TOKEN"'
        ' --discovery-token-ca-cert-hash "$GPUCTL_CA_CERT_HASH"'
        f' --node-name "$GPUCTL_NODE_NAME" {extra}'.rstrip()
        + "\n"
    )


def _kubeadm_cloud_config(params: JoinParams) -> str:
    """cloud-init user data: the join environment as a file, the commands as one runcmd."""
    env = _exports(params.variables(), "      ")
    commands = "".join(f"      {line}\n" for line in _kubeadm_commands(params).splitlines())
    return (
        "#cloud-config\n"
        "write_files:\n"
        "  - path: /etc/gpuctl/join.env\n"
        '    permissions: "0600"\n'
        "    content: |\n"
        f"{env}"
        "runcmd:\n"
        "  - - bash\n"
        "    - -euc\n"
        "    - |\n"
        f"{commands}"
    )


def _kubeadm_shell(params: JoinParams, *, container: bool = False) -> str:
    """The same join as a bash script, for clouds that run a script and not cloud-init.

    In a container the script is the main process: when it ends, the container stops
    and takes the kubelet with it, so there it stays alive after the join."""
    keep_alive = "exec sleep infinity  # the container's main process\n" if container else ""
    return (
        "#!/bin/bash\n"
        "set -euo pipefail\n"
        "umask 077\n"
        "mkdir -p /etc/gpuctl\n"
        "cat > /etc/gpuctl/join.env <<'GPUCTL_JOIN_ENV'\n"
        f"{_exports(params.variables())}"
        "GPUCTL_JOIN_ENV\n"
        f"{_kubeadm_commands(params)}"
        f"{keep_alive}"
    )


def _k3s(params: JoinParams) -> str:
    labels = " ".join(f"--node-label {shlex.quote(f'{k}={v}')}" for k, v in params.labels.items())
    taints = " ".join(f"--node-taint {shlex.quote(t)}" for t in params.taints)
    extra = " ".join(shlex.quote(a) for a in params.extra_args)
    version = (
        f"INSTALL_K3S_VERSION={shlex.quote(params.kubernetes_version)} "
        if params.kubernetes_version
        else ""
    )
    return (
        "#!/bin/sh\nset -eu\n"
        + _exports(params.variables())
        + f'curl -sfL https://get.k3s.io | {version}K3S_URL="$GPUCTL_API_SERVER" '
        'K3S_TOKEN="$GPUCTL_BOOTSTRAP_TOKEN" sh -s - agent '
        f'--node-name "$GPUCTL_NODE_NAME" {labels} {taints} {extra}\n'
    )


def _template(params: JoinParams, template: str, *, yaml: bool) -> str:
    """A user template (talos machine config or a script) with ${GPUCTL_*} substituted.

    The contract variables go first: as comments in YAML, after the shebang in a script.
    """
    variables = params.variables()
    body = string.Template(template).safe_substitute(variables)
    if yaml:
        return _exports(variables, "# ") + body
    shebang = ""
    if body.startswith("#!"):
        first, _, body = body.partition("\n")
        shebang = first + "\n"
    return shebang + _exports(variables) + body


def render(
    method: Method,
    params: JoinParams,
    template: str | None = None,
    *,
    cloud_format: JoinMethod = JoinMethod.USER_DATA,
) -> JoinData:
    """The join payload for `method`, in the form the cloud runs (`cloud_format`).

    cloud-init user data takes YAML or a script; a startup script or a container's
    start command must be a shell script, so kubeadm's join is rendered as bash there
    and a Talos machine config (YAML, no script) cannot be used at all.
    `template` is required for talos and script.
    """
    wants_shell = cloud_format is not JoinMethod.USER_DATA
    if method is Method.KUBEADM:
        container = cloud_format is JoinMethod.CONTAINER_ENV
        script = (
            _kubeadm_shell(params, container=container)
            if wants_shell
            else _kubeadm_cloud_config(params)
        )
    elif method is Method.K3S:
        script = _k3s(params)
    else:
        if not template:
            raise ValueError(f"bootstrap method {method.value} needs a template")
        if method is Method.TALOS and wants_shell:
            raise ValueError(
                f"bootstrap method talos needs cloud-init user data; this cloud runs "
                f"a {cloud_format.value} (a shell script)"
            )
        script = _template(params, template, yaml=method is Method.TALOS)
    return JoinData(script=script, env=params.variables())
