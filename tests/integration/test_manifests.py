"""The install manifests render with kustomize and the real API server accepts them.

Rendering uses the built kubectl's kustomize (`kubectl kustomize DIR`, no server).
Applying is a server-side dry run (`kubectl apply --server-side --dry-run=server`):
the API server validates every object (schemas, CRD schemas and CEL rules, RBAC
escalation checks, Pod Security) and persists nothing.

A dry run of a namespaced object needs its namespace to exist, and a dry run of the
Namespace object does not create it. Creating gpuctl-system for real would leak into
other tests (without a namespace controller a deleted namespace never goes away), so
namespaced objects are moved into the test's fresh namespace (`namespace` fixture)
first; their content is otherwise exactly what kustomize rendered. On a real cluster
`kubectl apply -k manifests/default` creates the Namespace first in the same call.

The RBAC test applies the operator's roles for real, renamed so they cannot clash with
anything else in the session, and asks the API server's authorizer (SubjectAccessReview)
what the ServiceAccount may do: exactly tests/unit/test_rbac_rules.py's table.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

import gpuctl
from gpuctl.api.install import install_crds
from gpuctl.dev.controlplane import ControlPlane
from tests.unit.test_rbac_rules import CLUSTER, EXPECTED, OPERATOR_NAMESPACE

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SIM_NAMESPACE = "gpuctl-sim"
# What `gpuctl run` exports (docs/install.md#monitoring), plus Prometheus' own `up`.
METRICS = {
    "gpuctl_requests",
    "gpuctl_launches_total",
    "gpuctl_interruptions_total",
    "gpuctl_leaked_instances_collected_total",
    "gpuctl_provider_api_errors_total",
    "gpuctl_provider_api_calls_total",
    "gpuctl_provider_ready",
    "gpuctl_duplicate_instances_total",
    "gpuctl_running_price_per_hour_usd",
    "gpuctl_launch_to_ready_seconds_bucket",
    "gpuctl_reconcile_errors_total",
    "gpuctl_workqueue_depth",
    "gpuctl_leader_election_master_status",
    "up",
}
RBAC_KINDS = {"ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}

Obj = dict[str, Any]


async def run(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def render(kubectl: list[str], directory: Path) -> list[Obj]:
    """`kubectl kustomize DIR`: rendering needs no server, so no kubeconfig either."""
    code, out, err = await run([kubectl[0], "kustomize", str(directory)])
    assert code == 0, f"kubectl kustomize {directory} failed:\n{err}"
    return [doc for doc in yaml.safe_load_all(out) if doc]


async def dry_run(kubectl: list[str], objects: list[Obj]) -> str:
    """Server-side dry-run apply; returns stdout + stderr (warnings are on stderr)."""
    # --force-conflicts: other tests in the session may own CRD fields through another
    # field manager; a dry run only validates, taking ownership does not matter.
    argv = [
        *kubectl,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=gpuctl-manifest-test",
        "-f",
        "-",
    ]
    code, out, err = await run(argv, yaml.safe_dump_all(objects))
    assert code == 0, f"the API server rejected the manifests:\n{out}{err}"
    lines = out.splitlines()
    assert len(lines) == len(objects) and all("(server dry run)" in line for line in lines), out
    return out + err


def key(obj: Obj) -> tuple[str, str | None, str]:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def move(objects: list[Obj], moves: dict[str, str]) -> list[Obj]:
    """Copies with namespaces (of objects and of ServiceAccount subjects) renamed."""
    moved = copy.deepcopy(objects)
    for obj in moved:
        meta = obj["metadata"]
        if obj["kind"] != "Namespace" and meta.get("namespace") in moves:
            meta["namespace"] = moves[meta["namespace"]]
        for subject in obj.get("subjects", []):
            if subject.get("namespace") in moves:
                subject["namespace"] = moves[subject["namespace"]]
    return moved


@pytest.fixture(scope="module")
async def crds(kube: client.ApiClient) -> AsyncIterator[None]:
    await install_crds(kube)
    yield


@pytest.fixture
async def restricted_namespace(kube: client.ApiClient, namespace: str) -> str:
    """The test namespace, enforcing the "restricted" Pod Security Standard like ours do."""
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    await client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": labels}})
    return namespace


@pytest.fixture(scope="module")
async def default(control_plane: ControlPlane) -> list[Obj]:
    return await render([str(control_plane.kubectl)], MANIFESTS / "default")


# -- manifests/default ------------------------------------------------------------


def test_default_renders_the_whole_install(default: list[Obj]) -> None:
    ns = OPERATOR_NAMESPACE
    assert sorted(map(key, default), key=str) == sorted(
        [
            ("Namespace", None, ns),
            ("CustomResourceDefinition", None, "gpunodepools.gpuctl.io"),
            ("CustomResourceDefinition", None, "gpunoderequests.gpuctl.io"),
            ("CustomResourceDefinition", None, "gpuproviders.gpuctl.io"),
            ("ServiceAccount", ns, "gpuctl"),
            ("ClusterRole", None, "gpuctl-manager"),
            ("ClusterRoleBinding", None, "gpuctl-manager"),
            ("Role", ns, "gpuctl-manager"),
            ("RoleBinding", ns, "gpuctl-manager"),
            # Kept in kube-system: a plain kustomize `namespace:` would have moved them.
            ("Role", "kube-system", "gpuctl-bootstrap-tokens"),
            ("RoleBinding", "kube-system", "gpuctl-bootstrap-tokens"),
            # manifests/join: what gpuctl's bootstrap tokens need to join (kubeadm's grants).
            ("Role", "kube-public", "gpuctl:bootstrap-signer-clusterinfo"),
            ("RoleBinding", "kube-public", "gpuctl:bootstrap-signer-clusterinfo"),
            ("Role", "kube-system", "gpuctl:nodes-kubeadm-config"),
            ("RoleBinding", "kube-system", "gpuctl:nodes-kubeadm-config"),
            ("Role", "kube-system", "gpuctl:kubelet-config"),
            ("RoleBinding", "kube-system", "gpuctl:kubelet-config"),
            ("ClusterRole", None, "gpuctl:get-nodes"),
            ("ClusterRoleBinding", None, "gpuctl:get-nodes"),
            ("ClusterRoleBinding", None, "gpuctl:kubelet-bootstrap"),
            ("ClusterRoleBinding", None, "gpuctl:node-autoapprove-bootstrap"),
            ("ClusterRoleBinding", None, "gpuctl:node-autoapprove-certificate-rotation"),
            ("Deployment", ns, "gpuctl-controller-manager"),
            ("PodDisruptionBudget", ns, "gpuctl-controller-manager"),
            ("Service", ns, "gpuctl-controller-manager-metrics"),
        ],
        key=str,
    )
    for obj in default:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gpuctl", key(obj)
        assert labels["app.kubernetes.io/part-of"] == "gpuctl", key(obj)


def find(objects: list[Obj], kind: str) -> Obj:
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def test_the_deployment_is_hardened_and_highly_available(default: list[Obj]) -> None:
    deployment = find(default, "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    selector = spec["selector"]["matchLabels"]
    assert spec["replicas"] == 2
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert find(default, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": selector},
    }
    assert find(default, "Service")["spec"]["selector"] == selector
    assert pod["serviceAccountName"] == "gpuctl"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
        "kubernetes.io/hostname"
    }
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/gpuctl/gpuctl:v{gpuctl.__version__}"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["args"][0] == "run"
    assert "--leader-elect" in container["args"]
    assert "--namespace=$(POD_NAMESPACE)" in container["args"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"]["memory"] == "512Mi"


async def test_default_applies_with_server_side_dry_run(
    kubectl: list[str], default: list[Obj], restricted_namespace: str
) -> None:
    output = await dry_run(kubectl, move(default, {OPERATOR_NAMESPACE: restricted_namespace}))
    # The pod template meets the restricted Pod Security Standard: no warnings.
    assert "PodSecurity" not in output, output


# -- RBAC against the real authorizer ------------------------------------------------


def isolate(objects: list[Obj], namespace: str, suffix: str) -> list[Obj]:
    """The RBAC objects, renamed with `suffix` and moved from gpuctl-system to `namespace`."""
    isolated = []
    for obj in move(
        [o for o in objects if o["kind"] in RBAC_KINDS], {OPERATOR_NAMESPACE: namespace}
    ):
        obj["metadata"]["name"] += suffix
        if "roleRef" in obj:
            obj["roleRef"]["name"] += suffix
        for subject in obj.get("subjects", []):
            subject["name"] += suffix
        isolated.append(obj)
    return isolated


@pytest.fixture
async def operator_user(
    kubectl: list[str], default: list[Obj], namespace: str
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Applies the operator's RBAC for real; yields its user and the scope -> namespace map."""
    suffix = f"-{secrets.token_hex(3)}"
    objects = isolate(default, namespace, suffix)
    document = yaml.safe_dump_all(objects)
    code, out, err = await run([*kubectl, "apply", "--server-side", "-f", "-"], document)
    assert code == 0, out + err
    try:
        user = f"system:serviceaccount:{namespace}:gpuctl{suffix}"
        yield user, {CLUSTER: "", OPERATOR_NAMESPACE: namespace, "kube-system": "kube-system"}
    finally:
        await run([*kubectl, "delete", "--ignore-not-found", "-f", "-"], document)


async def allowed(
    kube: client.ApiClient, user: str, verb: str, group: str, resource: str, namespace: str
) -> bool:
    resource, _, subresource = resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                namespace=namespace or None,
            ),
        )
    )
    answer = await client.AuthorizationV1Api(kube).create_subject_access_review(review)
    return bool(answer.status.allowed)


ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


async def test_the_authorizer_grants_exactly_the_table(
    kube: client.ApiClient, operator_user: tuple[str, dict[str, str]]
) -> None:
    user, namespaces = operator_user
    checks = [
        (verb, group, resource, namespaces[scope], verb in verbs)
        for (scope, group, resource), verbs in EXPECTED.items()
        for verb in ALL_VERBS
    ]
    answers = await asyncio.gather(
        *(allowed(kube, user, verb, group, res, ns) for verb, group, res, ns, _ in checks)
    )
    wrong = [check[:4] for check, answer in zip(checks, answers, strict=True) if answer != check[4]]
    assert not wrong, f"(verb, group, resource, namespace) answered against the table: {wrong}"


# Things the operator never does; "operator" stands for its namespace.
REFUSED = [
    ("list", "", "secrets", ""),  # Secrets only by namespace, never cluster-wide
    ("get", "", "secrets", "default"),
    ("list", "", "secrets", "kube-system"),
    ("create", "", "nodes", ""),
    ("deletecollection", "gpuctl.io", "gpunoderequests", ""),
    ("delete", "gpuctl.io", "gpuproviders", ""),
    ("get", "", "configmaps", "default"),
    ("update", "coordination.k8s.io", "leases", "default"),
    ("patch", "", "pods", "operator"),  # pods: read, evicted, deleted; never changed
    ("create", "", "pods", "operator"),
    ("get", "", "serviceaccounts", "operator"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("*", "*", "*", ""),
]


async def test_the_authorizer_refuses_everything_else(
    kube: client.ApiClient, operator_user: tuple[str, dict[str, str]]
) -> None:
    user, namespaces = operator_user
    checks = [
        (verb, group, resource, namespaces[OPERATOR_NAMESPACE] if where == "operator" else where)
        for verb, group, resource, where in REFUSED
    ]
    answers = await asyncio.gather(*(allowed(kube, user, *check) for check in checks))
    assert not [check for check, answer in zip(checks, answers, strict=True) if answer]


# -- manifests/join against the real authorizer -------------------------------------

TOKEN_GROUP = "system:bootstrappers:gpuctl"
CSR = "certificates.k8s.io"
# (who, verb, group, resource, namespace, name, allowed). "tokens" is a bootstrap token of
# gpuctl's group, "anonymous" an unauthenticated caller, "node" a joined kubelet.
JOIN_CHECKS = [
    ("anonymous", "get", "", "configmaps", "kube-public", "cluster-info", True),
    ("anonymous", "get", "", "configmaps", "kube-public", "other", False),
    ("anonymous", "list", "", "configmaps", "kube-public", "", False),
    ("anonymous", "get", "", "configmaps", "kube-system", "kubeadm-config", False),
    ("anonymous", "create", CSR, "certificatesigningrequests", "", "", False),
    ("tokens", "get", "", "configmaps", "kube-system", "kubeadm-config", True),
    ("tokens", "get", "", "configmaps", "kube-system", "kubelet-config", True),
    ("tokens", "get", "", "configmaps", "kube-system", "kube-proxy", False),
    ("tokens", "list", "", "configmaps", "kube-system", "", False),
    ("tokens", "update", "", "configmaps", "kube-system", "kubelet-config", False),
    ("tokens", "get", "", "secrets", "kube-system", "", False),
    ("tokens", "get", "", "nodes", "", "gpu-node-1", True),
    ("tokens", "list", "", "nodes", "", "", False),
    ("tokens", "create", "", "nodes", "", "", False),
    ("tokens", "patch", "", "nodes/status", "", "gpu-node-1", False),
    ("tokens", "create", CSR, "certificatesigningrequests", "", "", True),
    ("tokens", "get", CSR, "certificatesigningrequests", "", "csr-1", True),
    ("tokens", "create", CSR, "certificatesigningrequests/nodeclient", "", "", True),
    ("tokens", "create", CSR, "certificatesigningrequests/selfnodeclient", "", "", False),
    ("tokens", "update", CSR, "certificatesigningrequests/approval", "", "csr-1", False),
    ("node", "create", CSR, "certificatesigningrequests/selfnodeclient", "", "", True),
    ("node", "create", CSR, "certificatesigningrequests/nodeclient", "", "", False),
    ("node", "get", "", "configmaps", "kube-system", "kubeadm-config", False),
]


@pytest.fixture
async def join_identities(
    kubectl: list[str], default: list[Obj]
) -> AsyncIterator[dict[str, tuple[str, list[str]]]]:
    """manifests/join applied for real, its subjects replaced by identities of this test.

    Names get a suffix, and system:anonymous, gpuctl's token group and system:nodes are
    swapped for a test user and groups, so that grants other tests or the control plane
    made to the real subjects cannot answer for these objects (subjects are checked by
    tests/unit/test_join_rbac.py).
    """
    suffix = f"-{secrets.token_hex(3)}"
    anonymous, tokens, nodes = (f"gpuctl-test:{who}{suffix}" for who in ("anon", "tok", "node"))
    swap = {"system:anonymous": anonymous, TOKEN_GROUP: tokens, "system:nodes": nodes}
    join = await render(kubectl, MANIFESTS / "join")
    assert {key(o) for o in join} <= {key(o) for o in default}  # default includes the join
    for obj in join:
        obj["metadata"]["name"] += suffix
        ref = obj.get("roleRef")
        if ref and ref["name"].startswith("gpuctl:"):  # not the API server's own roles
            ref["name"] += suffix
        for subject in obj.get("subjects", []):
            subject["name"] = swap[subject["name"]]
    document = yaml.safe_dump_all(join)
    code, out, err = await run([*kubectl, "apply", "--server-side", "-f", "-"], document)
    assert code == 0, out + err
    try:
        yield {
            "anonymous": (anonymous, []),
            "tokens": ("system:bootstrap:abcdef", [tokens]),
            "node": ("system:node:gpu-node-1", [nodes]),
        }
    finally:
        await run([*kubectl, "delete", "--ignore-not-found", "-f", "-"], document)


async def may(kube: client.ApiClient, identity: tuple[str, list[str]], check: list[str]) -> bool:
    verb, group, resource, namespace, name = check
    resource, _, subresource = resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=identity[0],
            groups=identity[1],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                namespace=namespace or None,
                name=name or None,
            ),
        )
    )
    answer = await client.AuthorizationV1Api(kube).create_subject_access_review(review)
    return bool(answer.status.allowed)


async def test_the_join_grants_what_kubeadm_join_needs_and_nothing_else(
    kube: client.ApiClient, join_identities: dict[str, tuple[str, list[str]]]
) -> None:
    answers = await asyncio.gather(
        *(may(kube, join_identities[who], check) for who, *check, _ in JOIN_CHECKS)
    )
    wrong = [c[:-1] for c, a in zip(JOIN_CHECKS, answers, strict=True) if a != c[-1]]
    assert not wrong, f"answered against the table: {wrong}"


# -- manifests/prometheus ----------------------------------------------------------


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


async def test_prometheus_rules_are_well_formed(kubectl: list[str], default: list[Obj]) -> None:
    objects = await render(kubectl, MANIFESTS / "prometheus")
    assert {o["kind"] for o in objects} == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert all(
        o["apiVersion"] == "monitoring.coreos.com/v1" for o in objects if o["kind"] != "ConfigMap"
    )
    grafana = find(
        objects, "ConfigMap"
    )  # the Grafana dashboard (tests/integration/test_prometheus.py)
    assert grafana["metadata"]["labels"]["grafana_dashboard"] == "1"

    monitor, service = find(objects, "ServiceMonitor"), find(default, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }

    rules = [
        rule
        for group in find(objects, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    ]
    assert {rule["alert"] for rule in rules} == {
        "GPUCtlOperatorDown",
        "GPUCtlNoLeader",
        "GPUCtlReconcileErrors",
        "GPUCtlWorkQueueBacklog",
        "GPUCtlRequestsStuck",
        "GPUCtlLaunchFailures",
        "GPUCtlSpotInterruptions",
        "GPUCtlSlowLaunches",
        "GPUCtlDuplicateInstances",
        "GPUCtlBurnRateDoubled",
        "GPUCtlLeakedInstancesCollected",
        "GPUCtlProviderNotReady",
        "GPUCtlProviderRateLimited",
        "GPUCtlProviderAPIErrors",
    }
    for rule in rules:
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        assert set(re.findall(r"\b(gpuctl_[a-z_]+|up)\b", expr)) <= METRICS, expr
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description"} <= rule["annotations"].keys()
        assert DURATION.match(rule.get("for", "0s")), rule
    by_name = {rule["alert"]: rule for rule in rules}
    # A collected leak means money was burning unseen: page at once.
    assert by_name["GPUCtlLeakedInstancesCollected"]["labels"]["severity"] == "critical"
    assert "for" not in by_name["GPUCtlLeakedInstancesCollected"]
    assert by_name["GPUCtlRequestsStuck"]["for"] == "30m"


# -- manifests/samples and manifests/sim -----------------------------------------------


@pytest.mark.usefixtures("crds")
async def test_samples_apply_with_server_side_dry_run(kubectl: list[str], namespace: str) -> None:
    if not (MANIFESTS / "samples" / "kustomization.yaml").exists():
        pytest.skip("no manifests/samples")
    samples = await render(kubectl, MANIFESTS / "samples")
    assert {o["kind"] for o in samples} >= {"GPUProvider", "GPUNodeRequest", "Secret"}
    await dry_run(kubectl, move(samples, {OPERATOR_NAMESPACE: namespace}))


@pytest.mark.usefixtures("crds")
async def test_sim_and_e2e_objects_apply_with_server_side_dry_run(
    kubectl: list[str], restricted_namespace: str
) -> None:
    sim = await render(kubectl, MANIFESTS / "sim")
    e2e = await render(kubectl, MANIFESTS / "sim" / "e2e")
    assert {o["kind"] for o in e2e} == {"Secret", "GPUProvider", "GPUNodeRequest"}
    moves = {SIM_NAMESPACE: restricted_namespace, OPERATOR_NAMESPACE: restricted_namespace}
    output = await dry_run(kubectl, move(sim + e2e, moves))
    assert "PodSecurity" not in output, output
    # Each GPUProvider's credentials are a Secret of the e2e set, where gpuctl reads them.
    secret_names = {o["metadata"]["name"] for o in e2e if o["kind"] == "Secret"}
    for provider in (o for o in e2e if o["kind"] == "GPUProvider"):
        ref = provider["spec"]["credentialsSecretRef"]
        assert ref["namespace"] == OPERATOR_NAMESPACE and ref["name"] in secret_names


def test_the_sim_configuration_matches_its_wiring() -> None:
    """The simulator accepts its config; ports, sidecar, Service and keys agree."""
    from gpuctl.sim.config import SimConfig  # noqa: PLC0415 - needs the `sim` extra

    config = SimConfig.from_yaml(MANIFESTS / "sim" / "sim-config.yaml")
    deployment = yaml.safe_load((MANIFESTS / "sim" / "deployment.yaml").read_text())
    service = yaml.safe_load((MANIFESTS / "sim" / "service.yaml").read_text())
    expose = next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "expose"
    )
    forwarded = dict(
        pair.split("=")
        for pair in next(e["value"] for e in expose["env"] if e["name"] == "EXPOSE").split(",")
    )
    published = {p["name"]: p["containerPort"] for p in expose["ports"]}
    for name, private in config.ports.items():
        assert int(forwarded[str(published[name])]) == private, name
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(published)

    secrets_ = list(yaml.safe_load_all((MANIFESTS / "sim" / "e2e" / "secrets.yaml").read_text()))
    keys = {s["metadata"]["name"].split("-")[1]: s["stringData"]["apiKey"] for s in secrets_}
    assert keys == {cloud: config.api_key(cloud) for cloud in ("lambda", "runpod", "paperspace")}
    # Cloud APIs only: no machine joins from the restricted pod, nothing talks to the API.
    assert not config.execute_join_data and config.kubeconfig is None
