"""docs/install.md followed literally on the local control plane: install, a request, uninstall.

The docs' own commands are run as written, by bash, with the built kubectl as the
cluster admin (`KUBECONFIG`), from a directory laid out as the docs assume:

- "Install": the overlay `my-gpuctl/kustomization.yaml` exactly as the docs show it, with
  only its placeholders filled in (the path to manifests/default, `--cluster-name`,
  `--join-endpoint`; the image stays `registry.example.com/platform/gpuctl:v<version>`),
  then `kubectl apply -k my-gpuctl`;
- "Provider credentials, a GPUProvider, a first request": the credential Secret from
  `$LAMBDA_API_KEY` (the simulated Lambda's key), `manifests/samples/provider-lambda.yaml`
  with its apiServerEndpoint edited as the docs say and its `endpoint` set to the simulated
  Lambda as its comment shows, `kubectl get gpr`, the first request;
- "Uninstall": delete the requests and wait, check none is left, `kubectl delete -k`.

What a real cluster would do and this one cannot:

- The Deployment's pods cannot run here (no container runtime), so the operator runs as a
  process in their place: `gpuctl run` from the wheel installed into a fresh virtualenv
  (tests/wheel.py), with the args and env of the Deployment as applied to the cluster,
  authenticated as the `gpuctl` ServiceAccount by a TokenRequest token (as the pod's
  projected token would). Appended, as an overlay could: its own health port and short
  poll intervals. It is stopped (SIGTERM) when `kubectl delete -k` would delete its pod.
- `kubectl rollout status` and `kubectl get gnr -w` are not run (the pods never start; a
  watch never ends): the test waits for the provider and the request to be Ready instead.

The machine joins with nothing but what manifests/ grants gpuctl's token group: any other
binding that grants that group something is set aside for the test. And the session's
cluster is left as found: objects of the overlay that existed before (the CRDs and
namespace other e2e tests' fixtures made) are re-created after the uninstall.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

import gpuctl
from gpuctl.controllers.bootstrap import TOKEN_GROUP
from gpuctl.controllers.resources import GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane, TokenUser
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import NODES, SECRETS
from gpuctl.sim import Simulator
from tests.e2e.conftest import ISSUED_KEYS, wait_for, wait_phase
from tests.wheel import ROOT, Installed, running_gpuctl

DOCS = ROOT / "docs" / "install.md"
NAMESPACE = "gpuctl-system"
REQUEST = "first-a10"
PROVIDER = "lambda"
IMAGE = f"registry.example.com/platform/gpuctl:v{gpuctl.__version__}"
# Not run, and why (see the module docstring).
NOT_RUN = {
    "kubectl -n gpuctl-system rollout status deployment/gpuctl-controller-manager",
    "kubectl get gnr -w",
}
# Appended to the Deployment's args for the process standing in for its pod.
FAST = [
    "--health-port=0",
    "--health-host=127.0.0.1",
    "--ready-poll=0.5",
    "--joining-poll=0.3",
    "--termination-poll=0.3",
    "--provider-refresh=5",
    "--gc-interval=0.5",
]
# Server-set fields dropped from objects saved before the test, to re-create them after.
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

Obj = dict[str, Any]


# -- the docs -------------------------------------------------------------------------


def docs_block(language: str, containing: str) -> str:
    """The one fenced `language` block of docs/install.md that contains `containing`."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", DOCS.read_text(), re.S | re.M)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"docs/install.md: {len(found)} {language} blocks with {containing!r}"
    return found[0]


def command(line: str) -> str:
    return line.split("#", 1)[0].strip()


def commands(block: str, *, drop: set[str] = NOT_RUN, keep: set[str] | None = None) -> str:
    """The block without the lines of the commands in `drop`; with `keep`, only those."""
    lines = block.splitlines()
    present = {command(line) for line in lines}
    if keep is not None:
        assert keep <= present, keep - present
        return "\n".join(line for line in lines if command(line) in keep) + "\n"
    return "\n".join(line for line in lines if command(line) not in drop) + "\n"


def overlay(directory: Path, cluster: str, endpoint: str) -> Path:
    """`my-gpuctl/kustomization.yaml` as the docs show it, its placeholders filled in."""
    text = docs_block("yaml", "# my-gpuctl/kustomization.yaml")
    fills = {
        "../gpuctl/manifests/default": os.path.relpath(ROOT / "manifests" / "default", directory),
        "--cluster-name=prod-eu-1": f"--cluster-name={cluster}",
        "--join-endpoint=https://api.prod-eu-1.example.com:6443": f"--join-endpoint={endpoint}",
    }
    for placeholder, value in fills.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    directory.mkdir(parents=True)
    (directory / "kustomization.yaml").write_text(text)
    return directory


def sample_provider(work: Path, sim: Simulator, endpoint: str) -> None:
    """manifests/samples/provider-lambda.yaml, edited as the docs and its comments say."""
    provider = yaml.safe_load((ROOT / "manifests/samples/provider-lambda.yaml").read_text())
    provider["spec"]["bootstrap"]["apiServerEndpoint"] = endpoint  # "edit apiServerEndpoint first"
    provider["spec"]["endpoint"] = sim.endpoint("lambda")  # "a simulator ... instead of Lambda's"
    path = work / "manifests" / "samples" / "provider-lambda.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(provider))


async def bash(script: str, cwd: Path, environ: dict[str, str], timeout: float = 180) -> str:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=cwd, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{script}\n--- exit {proc.returncode}:\n{text}"
    return text


async def kubectl_json(kubectl: list[str], *args: str, stdin: str | None = None) -> Any:
    proc = await asyncio.create_subprocess_exec(
        *kubectl, *args, "-o", "json",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out) if out.strip() else {"items": []}


async def kubectl_try(
    kubectl: list[str], *args: str, stdin: str | None = None, timeout: float = 120
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *kubectl, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def kubectl_run(kubectl: list[str], *args: str, stdin: str | None = None) -> str:
    code, out = await kubectl_try(kubectl, *args, stdin=stdin)
    assert code == 0, out
    return out


# -- the session's cluster, left as found ---------------------------------------------


def key(obj: Obj) -> tuple[str, str | None, str]:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def saved(obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    for name in SERVER_FIELDS:
        obj["metadata"].pop(name, None)
    return obj


def grants_the_token_group(binding: Obj) -> bool:
    return any(
        s["kind"] == "Group" and s["name"] == TOKEN_GROUP for s in binding.get("subjects") or []
    )


@contextlib.asynccontextmanager
async def cluster_left_as_found(kubectl: list[str], rendered: list[Obj]) -> AsyncIterator[None]:
    """Set aside what the overlay would overwrite or other tests granted gpuctl's tokens;
    put it back after the test, once the uninstall has removed the overlay's objects."""
    document = yaml.safe_dump_all(rendered)
    existing = await kubectl_json(kubectl, "get", "--ignore-not-found", "-f", "-", stdin=document)
    before = [saved(o) for o in existing["items"]]
    ours = {key(o) for o in rendered}
    bindings = await kubectl_json(kubectl, "get", "clusterrolebindings,rolebindings", "-A")
    aside = [
        saved(b) for b in bindings["items"] if grants_the_token_group(b) and key(b) not in ours
    ]
    if aside:
        await kubectl_run(kubectl, "delete", "-f", "-", stdin=yaml.safe_dump_all(aside))
    try:
        yield
    finally:
        left = await kubectl_json(kubectl, "get", "--ignore-not-found", "-f", "-", stdin=document)
        if left["items"]:  # the test failed before its uninstall: undo the install
            await _force_uninstall(kubectl, document)
        restore = before + aside
        if restore:
            await kubectl_run(kubectl, "create", "-f", "-", stdin=yaml.safe_dump_all(restore))
        crds = [
            f"crd/{o['metadata']['name']}"
            for o in before
            if o["kind"] == "CustomResourceDefinition"
        ]
        if crds:
            await kubectl_run(
                kubectl, "wait", "--for=condition=Established", "--timeout=60s", *crds
            )
            # Established comes before the new storage serves lists ("429 storage is
            # (re)initializing"): wait for that too, for the tests that follow.
            plurals = ",".join(crd.removeprefix("crd/") for crd in crds)
            await wait_for(
                lambda: _lists(kubectl, plurals), 60, f"lists of {plurals}", interval=0.5
            )


async def _lists(kubectl: list[str], resources: str) -> bool:
    code, _ = await kubectl_try(kubectl, "get", resources, "-A")
    return code == 0


async def _force_uninstall(kubectl: list[str], document: str) -> None:
    """After a failure: release requests no operator will finish (printing them), then
    delete what the overlay created. The machines die with the test's simulator."""
    code, names = await kubectl_try(kubectl, "get", "gnr", "-o", "name")
    for name in names.split() if code == 0 else []:
        print("released after a failure:", name)
        await kubectl_try(
            kubectl, "patch", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )
    code, out = await kubectl_try(
        kubectl, "delete", "--ignore-not-found", "--timeout=120s", "-f", "-",
        stdin=document, timeout=180,
    )  # fmt: skip
    assert code == 0, out


# -- the test -----------------------------------------------------------------------


async def service_account_token(kube: client.ApiClient) -> str:
    answer = await client.CoreV1Api(kube).create_namespaced_service_account_token(
        "gpuctl",
        NAMESPACE,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    return str(answer.status.token)


def pod_process(deployment: Obj, kubeconfig: Path) -> tuple[list[str], dict[str, str]]:
    """The args and env the Deployment's container would run with, `$(VAR)`s expanded."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.namespace": NAMESPACE, "metadata.name": "gpuctl-controller-manager-0"}
    env = {
        var["name"]: var["value"]
        if "value" in var
        else fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        for var in container["env"]
    }
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    assert "command" not in container  # the image's entrypoint is `gpuctl`
    return [*args, f"--kubeconfig={kubeconfig}", *FAST], env


async def provider_ready(api: Client) -> bool:
    status = (await api.get(GPUPROVIDERS, PROVIDER)).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


async def test_install_a_first_request_and_uninstall_as_the_docs_say(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    kubectl: list[str],
    api: Client,
    sim: Simulator,
    gpuctl_wheel: Installed,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    cluster = f"install-{secrets.token_hex(3)}"
    my_gpuctl = overlay(work / "my-gpuctl", cluster, control_plane.url)
    sample_provider(work, sim, control_plane.url)
    rendered = [
        o
        for o in yaml.safe_load_all(await kubectl_run(kubectl[:1], "kustomize", str(my_gpuctl)))
        if o
    ]
    environ = {
        **os.environ,
        "PATH": f"{control_plane.kubectl.parent}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": str(control_plane.kubeconfig),
        "LAMBDA_API_KEY": sim.api_key("lambda"),
    }
    install = docs_block("sh", "kubectl apply -k my-gpuctl")
    first_request = docs_block("sh", "create secret generic lambda-credentials")
    uninstall = docs_block("sh", "kubectl delete gpunoderequests --all")
    delete_k = "kubectl delete -k my-gpuctl"

    async with cluster_left_as_found(kubectl, rendered):
        await bash(commands(install), work, environ)
        deployments = await kubectl_json(kubectl, "-n", NAMESPACE, "get", "deployments")
        (deployment,) = deployments["items"]
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE

        token = await service_account_token(kube)
        kubeconfig = control_plane.token_kubeconfig(
            TokenUser(f"system:serviceaccount:{NAMESPACE}:gpuctl", token=token)
        )
        args, env = pod_process(deployment, kubeconfig)
        assert f"--cluster-name={cluster}" in args and "--leader-elect" in args
        log = tmp_path / "operator.log"
        async with running_gpuctl(gpuctl_wheel, args, log, secrets=ISSUED_KEYS, env=env) as pod:
            await bash(commands(first_request), work, environ)
            try:
                await wait_for(lambda: provider_ready(api), 60, f"GPUProvider {PROVIDER} Ready")
                ready = await wait_phase(api, REQUEST, "Ready", timeout=120)
                node = await api.get(NODES, ready["status"]["nodeName"])
                assert node["metadata"]["labels"]["gpuctl.io/request"] == REQUEST
                conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
                assert conditions["Ready"] == "True"
            except BaseException:
                print("machines:", sim.instances("lambda"))
                print("operator:", pod.tail())
                # While the operator runs, so that it terminates the machine.
                await kubectl_try(kubectl, "delete", "gnr", "--all", "--timeout=60s", timeout=90)
                raise

            # Uninstall, while the operator still runs: the requests first.
            out = await bash(commands(uninstall, drop={delete_k}), work, environ)
            assert "No resources found" in out  # `kubectl get gpunoderequests`: empty
        # The operator stopped (its pod would be deleted with the Deployment), then:
        await bash(commands(uninstall, keep={delete_k}), work, environ)

        # Nothing is left: no machine at the cloud, no Node, no token, none of the objects.
        assert [i.name for i in sim.instances("lambda") if i.phase.live] == []
        assert len(sim.instances("lambda")) == 1
        assert not sim.violations
        nodes = await api.list(NODES, label_selector=f"gpuctl.io/request={REQUEST}")
        assert nodes["items"] == []
        tokens = await api.list(
            SECRETS, namespace="kube-system", label_selector=f"gpuctl.io/request={REQUEST}"
        )
        assert tokens["items"] == []
        left = await kubectl_json(
            kubectl, "get", "--ignore-not-found", "-f", "-", stdin=yaml.safe_dump_all(rendered)
        )
        assert [key(o) for o in left["items"]] == []
