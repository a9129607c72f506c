"""The simulated cloud-init: user data types, cloud-config modules, shellify, and what
Debian's cloud-init (22.4) says about the same documents.

The tests that run `cloud-init` itself (`cloud-init schema`, its `util.shellify`
through /usr/bin/python3) are skipped when the `cloud-init` apt package is absent.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gpuctl.controllers import bootstrap
from gpuctl.providers.base import JoinMethod
from gpuctl.sim.machines import cloudinit
from gpuctl.sim.machines.cloudinit import Kind, WriteFile

CLOUD_INIT = shutil.which("cloud-init")
needs_cloud_init = pytest.mark.skipif(
    CLOUD_INIT is None, reason="Debian's cloud-init package is not installed"
)


def kubeadm_user_data(taints: tuple[str, ...] = ("nvidia.com/gpu=present:NoSchedule",)) -> str:
    params = bootstrap.JoinParams(
        api_server="https://10.0.0.1:6443",
        token=bootstrap.Token("abcdef", "0123456789abcdef"),
        ca_cert_hash="sha256:" + "ab" * 32,
        node_name="gpu-a-1",
        labels={"gpuctl.io/request": "a"},
        taints=taints,
    )
    return bootstrap.render(
        bootstrap.Method.KUBEADM, params, cloud_format=JoinMethod.USER_DATA
    ).script


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", Kind.EMPTY),
        ("  \n", Kind.EMPTY),
        ("#cloud-config\nruncmd: [ls]\n", Kind.CLOUD_CONFIG),
        ("\n  #Cloud-Config\nruncmd: [ls]\n", Kind.CLOUD_CONFIG),  # case, leading space
        ("#!/bin/bash\necho hi\n", Kind.SCRIPT),
        ("#include\nhttp://example.com/x\n", Kind.NOT_SIMULATED),
        ("#cloud-boothook\necho\n", Kind.NOT_SIMULATED),
        ("#cloud-config-archive\n- type: text/x-shellscript\n", Kind.NOT_SIMULATED),
        ("## template: jinja\n#cloud-config\n", Kind.NOT_SIMULATED),
        ('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n', Kind.NOT_SIMULATED),
        ("export GPUCTL_API_SERVER=x\nkubeadm join\n", Kind.IGNORED),
        ("#cloud-config\n: [\n", Kind.INVALID),
        ("#cloud-config\n- a\n- b\n", Kind.INVALID),
    ],
)
def test_user_data_types(text: str, kind: Kind) -> None:
    parsed = cloudinit.parse(text)
    assert parsed.kind is kind
    if kind not in (Kind.CLOUD_CONFIG, Kind.SCRIPT):
        assert parsed.detail


def test_gpuctl_kubeadm_user_data() -> None:
    parsed = cloudinit.parse(kubeadm_user_data())
    assert parsed.kind is Kind.CLOUD_CONFIG and parsed.config is not None
    config = parsed.config
    assert config.problems == () and config.ignored_keys == () and config.bootcmd is None
    (env,) = config.write_files
    assert env.path == "/etc/gpuctl/join.env" and env.permissions == 0o600
    assert b"export GPUCTL_NODE_NAME=gpu-a-1\n" in env.content
    assert (env.owner, env.append, env.defer) == ("root:root", False, False)
    assert config.runcmd is not None
    first, second = config.runcmd.splitlines()[:2]
    assert first == "#!/bin/sh"
    assert second.startswith("'bash' '-euc' '. /etc/gpuctl/join.env")
    assert "kubeadm join" in config.runcmd


def test_write_files_encodings_permissions_and_flags() -> None:
    payload = b"\x00binary\xff"
    text = f"""#cloud-config
write_files:
  - path: etc/relative.conf
    content: plain
  - path: /b64
    encoding: b64
    content: {base64.b64encode(b"decoded").decode()}
    permissions: '0755'
  - path: /gz
    encoding: gz+b64
    content: {base64.b64encode(gzip.compress(payload)).decode()}
    permissions: 0600
  - path: /binary
    content: !!binary |
      {base64.b64encode(payload).decode()}
  - content: no path, skipped
  - path: /odd
    encoding: rot13
    content: unknown encodings are text
    permissions: not-octal
    owner: nobody:nogroup
    append: "yes"
    defer: true
"""
    parsed = cloudinit.parse(text)
    assert parsed.config is not None
    assert parsed.config.write_files == (
        WriteFile("/etc/relative.conf", b"plain"),
        WriteFile("/b64", b"decoded", permissions=0o755),
        WriteFile("/gz", payload, permissions=0o600),
        WriteFile("/binary", payload),
        WriteFile(
            "/odd",
            b"unknown encodings are text",
            owner="nobody:nogroup",
            append=True,
            defer=True,
        ),
    )
    assert parsed.config.problems == ()


def test_a_content_that_does_not_decode_fails_the_module() -> None:
    text = """#cloud-config
write_files:
  - path: /first
    content: ok
  - path: /broken
    encoding: gzip
    content: not gzip at all
  - path: /never
    content: after the failure
"""
    config = cloudinit.parse(text).config
    assert config is not None
    assert [f.path for f in config.write_files] == ["/first"]
    assert len(config.problems) == 1 and "/broken" in config.problems[0]


def test_module_errors_and_keys_not_run() -> None:
    config = cloudinit.parse(
        "#cloud-config\nruncmd: echo not a list\nbootcmd: [[ls, -l], 5]\npackages: [git]\n"
    ).config
    assert config is not None
    assert config.runcmd is None and config.bootcmd is None
    assert any("runcmd" in p and "type 'str'" in p for p in config.problems)
    assert any("bootcmd" in p and "type 'int'" in p for p in config.problems)
    assert config.ignored_keys == ("packages",)


def test_shellify_quotes_argv_items_and_keeps_strings() -> None:
    script = cloudinit.shellify([["echo", "it's", "$HOME"], "echo $HOME", None])
    assert script == "#!/bin/sh\n'echo' 'it'\\''s' '$HOME'\necho $HOME\n"
    with pytest.raises(TypeError):
        cloudinit.shellify("ls")


SHELLIFY_CASES = [
    [["a", "b'c", 1, 2.5, True]],
    ["plain line", None, ("tuple", "args")],
    [["bash", "-euc", "set -x\necho \"$X\" 'y'\n"]],
    [],
]


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system python")
@needs_cloud_init
@pytest.mark.parametrize("commands", SHELLIFY_CASES)
def test_shellify_matches_cloud_init(commands: list[object]) -> None:
    """Differential: the installed cloud-init's own util.shellify on the same input."""
    program = (
        "import json, sys; from cloudinit import util; "
        "print(util.shellify(json.load(sys.stdin)), end='')"
    )
    theirs = subprocess.run(
        ["/usr/bin/python3", "-c", program],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert cloudinit.shellify(json.loads(json.dumps(commands))) == theirs


def schema(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    assert CLOUD_INIT is not None
    path = tmp_path / "user-data"
    path.write_text(text)
    return subprocess.run(
        [CLOUD_INIT, "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@needs_cloud_init
@pytest.mark.parametrize("taints", [(), ("nvidia.com/gpu=present:NoSchedule", "a=b:NoExecute")])
def test_cloud_init_schema_accepts_gpuctl_user_data(
    tmp_path: Path, taints: tuple[str, ...]
) -> None:
    result = schema(tmp_path, kubeadm_user_data(taints))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@needs_cloud_init
def test_cloud_init_schema_and_the_simulator_reject_the_same_mistakes(tmp_path: Path) -> None:
    text = "#cloud-config\nruncmd: 5\nwrite_files:\n  - content: x\n"
    result = schema(tmp_path, text)
    assert result.returncode != 0
    assert "runcmd: 5 is not of type 'array'" in result.stdout + result.stderr
    config = cloudinit.parse(text).config
    assert config is not None
    assert config.runcmd is None and config.write_files == ()
    assert any(p.startswith("runcmd:") for p in config.problems)
