"""The operator's permissions, read from manifests/rbac: least privilege, and deliberate.

`EXPECTED` is the whole set of permissions the operator's ServiceAccount gets, by scope
("cluster" for ClusterRoleBindings, else the RoleBinding's namespace), API group and
resource. Any change to manifests/rbac must change this table too, so a new permission
is always a reviewed decision. tests/integration/test_manifests.py checks the same
table against the real API server's authorizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RBAC_DIR = ROOT / "manifests" / "rbac"
SIM_DIR = ROOT / "manifests" / "sim"
OPERATOR_NAMESPACE = "gpuctl-system"
SERVICE_ACCOUNT = (OPERATOR_NAMESPACE, "gpuctl")
CLUSTER = "cluster"

Scope = str  # CLUSTER or a namespace
Grant = tuple[Scope, str, str]  # (scope, apiGroup, resource[/subresource])

EXPECTED: dict[Grant, frozenset[str]] = {
    (CLUSTER, "gpuctl.io", "gpunoderequests"): frozenset(
        {"get", "list", "watch", "create", "patch", "update", "delete"}
    ),
    (CLUSTER, "gpuctl.io", "gpunoderequests/status"): frozenset({"get", "update", "patch"}),
    (CLUSTER, "gpuctl.io", "gpunodepools"): frozenset({"get", "list", "watch"}),
    (CLUSTER, "gpuctl.io", "gpunodepools/status"): frozenset({"get", "update", "patch"}),
    (CLUSTER, "gpuctl.io", "gpunodepools/finalizers"): frozenset({"update"}),
    (CLUSTER, "gpuctl.io", "gpuproviders"): frozenset({"get", "list", "watch"}),
    (CLUSTER, "gpuctl.io", "gpuproviders/status"): frozenset({"get", "update", "patch"}),
    (CLUSTER, "", "nodes"): frozenset({"get", "list", "watch", "patch", "delete"}),
    (CLUSTER, "", "events"): frozenset({"create", "patch", "list", "watch"}),
    (CLUSTER, "", "pods"): frozenset({"get", "list", "watch", "delete"}),
    (CLUSTER, "", "pods/eviction"): frozenset({"create"}),
    (CLUSTER, "policy", "poddisruptionbudgets"): frozenset({"get", "list", "watch"}),
    (OPERATOR_NAMESPACE, "", "secrets"): frozenset({"get", "list", "watch"}),
    (OPERATOR_NAMESPACE, "coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
    (OPERATOR_NAMESPACE, "", "configmaps"): frozenset({"get", "create", "update", "patch"}),
    ("kube-system", "", "secrets"): frozenset({"create", "get", "delete"}),
}

# Built-in roles that grant far more than any controller needs.
FORBIDDEN_ROLES = {"cluster-admin", "admin", "edit"}
ROLE_KINDS = {"Role", "ClusterRole"}
BINDING_KINDS = {"RoleBinding", "ClusterRoleBinding"}


def load(directory: Path) -> list[dict[str, Any]]:
    """Every object in the files a kustomization lists (files only, not sub-bases)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        if path.is_file():
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def rules(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ROLE_KINDS:
            for rule in obj.get("rules", []):
                yield obj, rule


def find_role(objects: list[dict[str, Any]], binding: dict[str, Any]) -> dict[str, Any]:
    ref = binding["roleRef"]
    namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
    for obj in objects:
        meta = obj["metadata"]
        if (obj["kind"], meta["name"], meta.get("namespace")) == (
            ref["kind"],
            ref["name"],
            namespace,
        ):
            return obj
    raise AssertionError(f"{binding['metadata']['name']}: roleRef {ref} is not in {RBAC_DIR}")


def binds_operator(binding: dict[str, Any]) -> bool:
    return any(
        subject["kind"] == "ServiceAccount"
        and (subject.get("namespace"), subject["name"]) == SERVICE_ACCOUNT
        for subject in binding.get("subjects", [])
    )


def granted(objects: list[dict[str, Any]]) -> dict[Grant, frozenset[str]]:
    """What the operator's ServiceAccount may do, merged over all its bindings."""
    grants: dict[Grant, set[str]] = {}
    for binding in objects:
        if binding["kind"] not in BINDING_KINDS or not binds_operator(binding):
            continue
        scope = binding["metadata"].get("namespace") or CLUSTER
        for rule in find_role(objects, binding)["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.setdefault((scope, group, resource), set()).update(rule["verbs"])
    return {grant: frozenset(verbs) for grant, verbs in grants.items()}


@pytest.fixture(scope="module")
def rbac() -> list[dict[str, Any]]:
    return load(RBAC_DIR)


def test_the_operator_gets_exactly_the_table(rbac: list[dict[str, Any]]) -> None:
    assert granted(rbac) == EXPECTED


@pytest.mark.parametrize("directory", [RBAC_DIR, SIM_DIR], ids=["rbac", "sim"])
def test_no_rule_uses_a_wildcard(directory: Path) -> None:
    for role, rule in rules(load(directory)):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: {rule}"
            assert not any("*" in value for value in rule.get(field, [])), rule


@pytest.mark.parametrize("directory", [RBAC_DIR, SIM_DIR], ids=["rbac", "sim"])
def test_no_binding_to_builtin_superuser_roles(directory: Path) -> None:
    for obj in load(directory):
        if obj["kind"] in BINDING_KINDS:
            assert obj["roleRef"]["name"] not in FORBIDDEN_ROLES, obj["metadata"]["name"]
            assert not obj["roleRef"]["name"].startswith("system:"), obj["metadata"]["name"]


def test_secrets_are_never_granted_cluster_wide(rbac: list[dict[str, Any]]) -> None:
    for role, rule in rules(rbac):
        if role["kind"] == "ClusterRole":
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
    assert all(scope != CLUSTER for scope, _, resource in granted(rbac) if resource == "secrets")


def test_bootstrap_tokens_are_not_listable(rbac: list[dict[str, Any]]) -> None:
    """kube-system Secrets hold other components' credentials: by name only."""
    verbs = granted(rbac)[("kube-system", "", "secrets")]
    assert not verbs & {"list", "watch", "update", "patch"}


def test_every_role_is_bound_to_the_operator_only(rbac: list[dict[str, Any]]) -> None:
    bound = set()
    for binding in rbac:
        if binding["kind"] in BINDING_KINDS:
            subjects = [(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]]
            assert subjects == [("ServiceAccount", *SERVICE_ACCOUNT)], binding["metadata"]
            role = find_role(rbac, binding)
            bound.add((role["kind"], role["metadata"]["name"]))
    roles = {(obj["kind"], obj["metadata"]["name"]) for obj in rbac if obj["kind"] in ROLE_KINDS}
    assert roles == bound


def test_the_service_account_is_the_operators(rbac: list[dict[str, Any]]) -> None:
    accounts = [obj for obj in rbac if obj["kind"] == "ServiceAccount"]
    assert [(a["metadata"]["namespace"], a["metadata"]["name"]) for a in accounts] == [
        SERVICE_ACCOUNT
    ]


def test_the_kustomization_lists_every_file() -> None:
    """A permission file left out of kustomization.yaml would silently not be installed."""
    listed = set(yaml.safe_load((RBAC_DIR / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in RBAC_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
