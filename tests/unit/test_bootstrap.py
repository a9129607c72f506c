import datetime
import re

from gpuctl.controllers.bootstrap import JoinParams, Method, Token, render, token_secret

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
