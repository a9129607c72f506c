"""The objects `kubeadm init` creates so that machines can join, for the local control plane.

`kubeadm join --token T --discovery-token-ca-cert-hash H` reads, in order:
the `cluster-info` ConfigMap in `kube-public` anonymously (its JWS signature for
the token is added by kube-controller-manager's bootstrap signer), then — as the
bootstrap token's user — `kubeadm-config` and `kubelet-config` in `kube-system`,
checks whether a Node of its name exists, and starts the kubelet, whose TLS
bootstrap creates a CertificateSigningRequest. kubeadm grants each of these to
its own token group `system:bootstrappers:kubeadm:default-node-token` (phases
bootstraptoken/clusterinfo, bootstraptoken/node, uploadconfig and kubelet of
cmd/kubeadm). The same rules, for gpuctl's token group, ship in `manifests/`:
gpuctl's tokens join only where those are installed.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

KUBEADM_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
NODES_GROUP = "system:nodes"
RBAC = "rbac.authorization.k8s.io"
RBAC_V1 = "/apis/rbac.authorization.k8s.io/v1"
NODE_CLIENT_ROLE = "system:certificates.k8s.io:certificatesigningrequests:nodeclient"
SELF_NODE_CLIENT_ROLE = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"

Obj = tuple[str, dict[str, Any]]  # (collection path, object)


def cluster_info_kubeconfig(server: str, ca_pem: bytes) -> str:
    """The kubeconfig `cluster-info` carries: the server and its CA, no user."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "contexts": [],
        "users": [],
        "preferences": {},
        "current-context": "",
    }
    return yaml.safe_dump(config, sort_keys=False)


def kubelet_configuration(cluster_dns: str = "10.0.0.10") -> str:
    """The `kubelet-config` ConfigMap's KubeletConfiguration (kubeadm's defaults)."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": [cluster_dns],
        "clusterDomain": "cluster.local",
        "rotateCertificates": True,
        "staticPodPath": "/etc/kubernetes/manifests",
    }
    return yaml.safe_dump(config, sort_keys=False)


def cluster_configuration(endpoint: str, version: str) -> str:
    """The `kubeadm-config` ConfigMap's ClusterConfiguration."""
    config = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": "gpuctl-dev",
        "kubernetesVersion": version,
        "controlPlaneEndpoint": endpoint,
        "certificatesDir": "/etc/kubernetes/pki",
        "networking": {"dnsDomain": "cluster.local", "serviceSubnet": "10.0.0.0/24"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _config_map(namespace: str, name: str, data: dict[str, str]) -> Obj:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }
    return f"/api/v1/namespaces/{namespace}/configmaps", body


def _get_role(namespace: str, name: str, resource: str, object_name: str) -> Obj:
    rule = {
        "apiGroups": [""],
        "resources": [resource],
        "resourceNames": [object_name],
        "verbs": ["get"],
    }
    body = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [rule],
    }
    return f"{RBAC_V1}/namespaces/{namespace}/roles", body


def _subjects(kind: str, *names: str) -> list[dict[str, str]]:
    if kind == "User":
        return [{"apiGroup": RBAC, "kind": "User", "name": n} for n in names]
    return [{"apiGroup": RBAC, "kind": "Group", "name": n} for n in names]


def _role_binding(namespace: str, name: str, subjects: list[dict[str, str]]) -> Obj:
    body = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
        "subjects": subjects,
    }
    return f"{RBAC_V1}/namespaces/{namespace}/rolebindings", body


def _cluster_role_binding(name: str, role: str, subjects: list[dict[str, str]]) -> Obj:
    body = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    }
    return f"{RBAC_V1}/clusterrolebindings", body


def _get_nodes_role() -> Obj:
    body = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubeadm:get-nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
    }
    return f"{RBAC_V1}/clusterroles", body


def init_objects(server: str, ca_pem: bytes, version: str) -> list[Obj]:
    """Everything kubeadm init creates for joins, in creation order."""
    token_and_nodes = _subjects("Group", KUBEADM_TOKEN_GROUP, NODES_GROUP)
    endpoint = server.removeprefix("https://")
    return [
        _config_map(
            "kube-public", "cluster-info", {"kubeconfig": cluster_info_kubeconfig(server, ca_pem)}
        ),
        _get_role(
            "kube-public", "kubeadm:bootstrap-signer-clusterinfo", "configmaps", "cluster-info"
        ),
        _role_binding(
            "kube-public",
            "kubeadm:bootstrap-signer-clusterinfo",
            _subjects("User", "system:anonymous"),
        ),
        _config_map(
            "kube-system",
            "kubeadm-config",
            {"ClusterConfiguration": cluster_configuration(endpoint, version)},
        ),
        _get_role("kube-system", "kubeadm:nodes-kubeadm-config", "configmaps", "kubeadm-config"),
        _role_binding("kube-system", "kubeadm:nodes-kubeadm-config", token_and_nodes),
        _config_map("kube-system", "kubelet-config", {"kubelet": kubelet_configuration()}),
        _get_role("kube-system", "kubeadm:kubelet-config", "configmaps", "kubelet-config"),
        _role_binding("kube-system", "kubeadm:kubelet-config", token_and_nodes),
        _get_nodes_role(),
        _cluster_role_binding(
            "kubeadm:get-nodes", "kubeadm:get-nodes", _subjects("Group", KUBEADM_TOKEN_GROUP)
        ),
        _cluster_role_binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            _subjects("Group", KUBEADM_TOKEN_GROUP),
        ),
        _cluster_role_binding(
            "kubeadm:node-autoapprove-bootstrap",
            NODE_CLIENT_ROLE,
            _subjects("Group", KUBEADM_TOKEN_GROUP),
        ),
        _cluster_role_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            SELF_NODE_CLIENT_ROLE,
            _subjects("Group", NODES_GROUP),
        ),
    ]
