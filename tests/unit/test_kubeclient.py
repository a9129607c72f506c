"""The API client makes no netrc or proxy look-up per call, and keeps the env's proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.runtime.kubeclient import api_client

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.1.2.3:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


@pytest.mark.parametrize(
    ("env", "proxy"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, "http://proxy.example:3128"),
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "10.1.2.3"}, None),
    ],
)
async def test_no_per_call_env_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], proxy: str | None
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    api = await api_client(path)
    try:
        assert api.rest_client.pool_manager.trust_env is False
        assert api.rest_client.proxy == proxy
    finally:
        await api.close()
