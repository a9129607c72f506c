import datetime
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gpuctl.controllers.bootstrap import JoinParams, Method, Token, render, token_secret
from gpuctl.providers.base import JoinMethod

CONTRACT = re.compile(r"^\s*#?\s*(?:export\s+)?(GPUCTL_[A-Z0-9_]+)=(['\"]?)(.*?)\2\s*$", re.M)

PARAMS = JoinParams(
    api_server="https://10.1.2.3:6443",
    token=Token("abcdef", "0123456789abcdef"),
    ca_cert_hash="sha256:" + "ab" * 32,
    node_name="gpuctl-demo-0a1b2c3d4e5f-1",
    labels={"gpuctl.io/request": "train", "team": "ml"},
    taints=("nvidia.com/gpu=true:NoSchedule",),
)


def contract_vars(text: str) -> dict[str, str]:
    return {m.group(1): m.group(3) for m in CONTRACT.finditer(text)}


def test_every_method_carries_the_join_contract() -> None:
    expected = PARAMS.variables()
    assert expected["GPUCTL_NODE_LABELS"] == "gpuctl.io/request=train,team=ml"
    for method, template in [
        (Method.KUBEADM, None),
        (Method.K3S, None),
        (Method.SCRIPT, "#!/bin/bash\necho join ${GPUCTL_NODE_NAME}\n"),
        (Method.TALOS, "machine:\n  token: ${GPUCTL_BOOTSTRAP_TOKEN}\n"),
    ]:
        data = render(method, PARAMS, template)
        assert contract_vars(data.script) == expected, method
        assert dict(data.env) == expected


def test_script_template_keeps_shebang_first_and_substitutes() -> None:
    script = render(Method.SCRIPT, PARAMS, "#!/bin/bash\necho ${GPUCTL_NODE_NAME}\n").script
    assert script.startswith("#!/bin/bash\nexport GPUCTL_API_SERVER=")
    assert script.endswith("echo gpuctl-demo-0a1b2c3d4e5f-1\n")


def test_kubeadm_is_cloud_config_with_join_command() -> None:
    script = render(Method.KUBEADM, PARAMS).script
    assert script.startswith("#cloud-config\n")
    assert "kubeadm join" in script and "--discovery-token-ca-cert-hash" in script


def test_kubeadm_cloud_config_parses_as_write_files_and_one_runcmd() -> None:
    config = yaml.safe_load(render(Method.KUBEADM, PARAMS).script)
    (written,) = config["write_files"]
    assert written["path"] == "/etc/gpuctl/join.env" and written["permissions"] == "0600"
    assert contract_vars(written["content"]) == PARAMS.variables()
    ((shell, flags, commands),) = config["runcmd"]
    assert (shell, flags) == ("bash", "-euc")
    assert commands.startswith(". /etc/gpuctl/join.env\n")
    assert "--register-with-taints=$GPUCTL_NODE_TAINTS" in commands


@pytest.mark.parametrize("cloud_format", [JoinMethod.STARTUP_SCRIPT, JoinMethod.CONTAINER_ENV])
def test_kubeadm_for_script_clouds_is_bash_not_cloud_config(cloud_format: JoinMethod) -> None:
    """Paperspace runs its startup script with bash: cloud-config YAML would never join."""
    script = render(Method.KUBEADM, PARAMS, cloud_format=cloud_format).script
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
    assert "#cloud-config" not in script
    assert contract_vars(script) == PARAMS.variables()
    assert 'kubeadm join "${GPUCTL_API_SERVER#https://}"' in script
    checked = subprocess.run(
        ["bash", "-n"], check=False, input=script, text=True, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr


def test_kubeadm_script_writes_env_then_joins_with_kubelet_flags(tmp_path: Path) -> None:
    """Run the bash join with stand-ins for the paths and kubeadm: the flags kubeadm and
    the kubelet get are exactly what the machine would run."""
    script = render(Method.KUBEADM, PARAMS, cloud_format=JoinMethod.STARTUP_SCRIPT).script
    root = str(tmp_path)
    (tmp_path / "etc" / "default").mkdir(parents=True)
    script = script.replace("/etc/", f"{root}/etc/")
    stub = f"kubeadm() {{ printf '%s\\n' \"$@\" > {root}/kubeadm.args; }}\n"
    body = script.replace("set -euo pipefail\n", "set -euo pipefail\n" + stub, 1)
    subprocess.run(["bash", "-c", body], check=True)
    args = (tmp_path / "kubeadm.args").read_text().split("\n")
    assert args[:2] == ["join", "10.1.2.3:6443"]
    assert args[args.index("--token") + 1] == PARAMS.token.value
    assert args[args.index("--node-name") + 1] == PARAMS.node_name
    kubelet = (tmp_path / "etc" / "default" / "kubelet").read_text()
    assert kubelet == (
        "KUBELET_EXTRA_ARGS=--node-labels=gpuctl.io/request=train,team=ml"
        " --register-with-taints=nvidia.com/gpu=true:NoSchedule\n"
    )


def test_talos_cannot_be_a_startup_script() -> None:
    with pytest.raises(ValueError, match="talos needs cloud-init user data"):
        render(Method.TALOS, PARAMS, "machine: {}\n", cloud_format=JoinMethod.STARTUP_SCRIPT)


def test_token_secret_is_what_the_authenticator_reads() -> None:
    token = Token.generate()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token.value)
    expires = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    secret = token_secret(token, request="train", attempt=2, expires=expires)
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["metadata"]["name"] == f"bootstrap-token-{token.id}"  # type: ignore[index]
    data = secret["stringData"]
    assert data["expiration"] == "2026-01-01T00:00:00Z"  # type: ignore[index]
    assert data["auth-extra-groups"] == "system:bootstrappers:gpuctl"  # type: ignore[index]
    assert "secret" not in repr(token).replace("secret_name", "")
