"""The operator's own API-server config and transport (no kubernetes_asyncio import)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from gpuctl.runtime import transport
from gpuctl.runtime.transport import ConfigError, HttpTransport, RestConfig

CONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://10.1.2.3:6443/", certificate-authority: ca.crt}}
- name: other
  cluster: {{server: "https://other:6443"}}
users:
- name: u
  user: {user}
contexts:
- name: x
  context: {{cluster: c, user: u}}
current-context: x
"""


def _write(tmp_path: Path, user: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(CONFIG.format(user=user))
    (tmp_path / "ca.crt").write_bytes(b"CA PEM")
    return path


def test_kubeconfig_cluster_and_token_file_relative_to_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "{tokenFile: tok, client-key-data: " + _b64("KEY") + "}")
    config = transport.load(path)
    assert config.host == "https://10.1.2.3:6443"
    assert config.ca_pem == b"CA PEM"  # the file named, relative to the kubeconfig
    assert config.token_file == tmp_path / "tok"
    assert config.key_pem == b"KEY" and config.cert_pem is None
    assert not transport.needs_kubernetes_asyncio(path)


def test_exec_and_auth_provider_users_go_to_kubernetes_asyncio(tmp_path: Path) -> None:
    path = _write(tmp_path, "{exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}}")
    assert transport.needs_kubernetes_asyncio(path)


def test_in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError):
        transport.in_cluster(tmp_path)  # no token file
    (tmp_path / "token").write_text("t1\n")
    config = transport.in_cluster(tmp_path)
    assert config.host == "https://[fd00::1]:443" and config.token_file == tmp_path / "token"


async def test_token_file_read_again_after_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    http = HttpTransport(RestConfig(host="https://127.0.0.1:1", token_file=token))
    try:
        assert http._bearer() == "first"
        token.write_text("rotated\n")
        assert http._bearer() == "first"  # within the minute: the copy in hand
        monkeypatch.setattr(http, "_token_read", http._token_read - transport.TOKEN_REFRESH)
        assert http._bearer() == "rotated"
    finally:
        await http.close()


def test_the_operator_does_not_import_kubernetes_asyncio() -> None:
    code = (
        "import sys, gpuctl.cli.run, gpuctl.controllers.operator; "
        "print([m for m in sys.modules if m.startswith('kubernetes_asyncio')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
