"""What manifests/join grants to joining machines: kubeadm's join grants, for gpuctl's tokens.

`BINDINGS` is the whole of it, binding by binding: (scope, role, subjects), where a
role is either one of the API server's built-in ClusterRoles (by name) or a role of
manifests/join, whose rules are in `ROLES`. Each matches what kubeadm grants its own
token group `system:bootstrappers:kubeadm:default-node-token` (kubernetes
cmd/kubeadm/app/phases/bootstraptoken/{clusterinfo,node}, uploadconfig, kubelet),
never more. tests/integration/test_manifests.py asks the real authorizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gpuctl.controllers.bootstrap import TOKEN_GROUP
from tests.unit.test_rbac_rules import BINDING_KINDS, ROLE_KINDS, load

ROOT = Path(__file__).resolve().parents[2]
JOIN_DIR = ROOT / "manifests" / "join"
CLUSTER = "cluster"
ANONYMOUS = ("User", "system:anonymous")
TOKENS = ("Group", TOKEN_GROUP)
NODES = ("Group", "system:nodes")

Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]
# (apiGroups, resources, resourceNames, verbs)

ROLES: dict[tuple[str, str, str], list[Rule]] = {  # (kind, namespace or "", name) -> rules
    ("Role", "kube-public", "gpuctl:bootstrap-signer-clusterinfo"): [
        (("",), ("configmaps",), ("cluster-info",), ("get",))
    ],
    ("Role", "kube-system", "gpuctl:nodes-kubeadm-config"): [
        (("",), ("configmaps",), ("kubeadm-config",), ("get",))
    ],
    ("Role", "kube-system", "gpuctl:kubelet-config"): [
        (("",), ("configmaps",), ("kubelet-config",), ("get",))
    ],
    ("ClusterRole", "", "gpuctl:get-nodes"): [(("",), ("nodes",), (), ("get",))],
}

BINDINGS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {  # name -> (scope, role, subj.)
    "gpuctl:bootstrap-signer-clusterinfo": (
        "kube-public",
        "gpuctl:bootstrap-signer-clusterinfo",
        [ANONYMOUS],
    ),
    "gpuctl:nodes-kubeadm-config": ("kube-system", "gpuctl:nodes-kubeadm-config", [TOKENS]),
    "gpuctl:kubelet-config": ("kube-system", "gpuctl:kubelet-config", [TOKENS]),
    "gpuctl:get-nodes": (CLUSTER, "gpuctl:get-nodes", [TOKENS]),
    # The API server's own roles, as kubeadm binds them.
    "gpuctl:kubelet-bootstrap": (CLUSTER, "system:node-bootstrapper", [TOKENS]),
    "gpuctl:node-autoapprove-bootstrap": (
        CLUSTER,
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        [TOKENS],
    ),
    "gpuctl:node-autoapprove-certificate-rotation": (
        CLUSTER,
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        [NODES],
    ),
}


def objects() -> list[dict[str, Any]]:
    return load(JOIN_DIR)


def test_the_bindings_are_exactly_the_table() -> None:
    found = {}
    for obj in objects():
        if obj["kind"] in BINDING_KINDS:
            meta = obj["metadata"]
            scope = meta.get("namespace") if obj["kind"] == "RoleBinding" else CLUSTER
            assert scope, meta
            subjects = [(s["kind"], s["name"]) for s in obj["subjects"]]
            assert all(s.get("apiGroup") == "rbac.authorization.k8s.io" for s in obj["subjects"])
            found[meta["name"]] = (scope, obj["roleRef"]["name"], subjects)
            assert obj["roleRef"]["kind"] == (
                "Role" if obj["kind"] == "RoleBinding" else "ClusterRole"
            )
    assert found == BINDINGS


def test_the_roles_are_exactly_the_table() -> None:
    found = {}
    for obj in objects():
        if obj["kind"] in ROLE_KINDS:
            meta = obj["metadata"]
            found[(obj["kind"], meta.get("namespace", ""), meta["name"])] = [
                tuple(
                    tuple(rule.get(f, ()))
                    for f in ("apiGroups", "resources", "resourceNames", "verbs")
                )
                for rule in obj["rules"]
            ]
    assert found == ROLES


def test_only_rbac_objects_and_every_file_listed() -> None:
    assert {obj["kind"] for obj in objects()} <= ROLE_KINDS | BINDING_KINDS
    listed = set(yaml.safe_load((JOIN_DIR / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in JOIN_DIR.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_group_is_the_one_gpuctl_puts_its_tokens_in() -> None:
    assert TOKEN_GROUP == "system:bootstrappers:gpuctl"
    groups = {s["name"] for o in objects() for s in o.get("subjects", []) if s["kind"] == "Group"}
    assert groups == {TOKEN_GROUP, "system:nodes"}


def test_configmaps_only_by_name_and_read_only() -> None:
    """No list or watch, no write, no Secrets: a token can read three named ConfigMaps."""
    for rules in ROLES.values():
        for _, resources, names, verbs in rules:
            assert set(verbs) == {"get"}
            assert "secrets" not in resources
            if "configmaps" in resources:
                assert len(names) == 1


def test_nothing_here_is_granted_to_the_operator() -> None:
    for obj in objects():
        assert all(s["kind"] != "ServiceAccount" for s in obj.get("subjects", []))
