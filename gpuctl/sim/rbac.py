"""RBAC for the simulated kubelet: what a bootstrap token may do to Nodes.

A real kubelet uses its bootstrap token only to request a client certificate
(a CertificateSigningRequest, approved by kube-controller-manager) and then acts
as `system:node:<name>` under the Node authorizer. The local control plane runs
no controller-manager, so the simulated kubelet takes a shortcut: the bootstrap
token's group `system:bootstrappers:gpuctl` is bound to ClusterRole
`gpuctl-sim-kubelet` (nodes get/list/create/patch/update/delete, nodes/status
patch/update) and registers the Node with it directly. Later updates use
`SimConfig.kubeconfig` in place of the certificate. Never install this in a
real cluster: it lets any bootstrap token of that group edit every Node.
"""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

ROLE = "gpuctl-sim-kubelet"
BOOTSTRAP_GROUP = "system:bootstrappers:gpuctl"
_RBAC_GROUP = "rbac.authorization.k8s.io"


def cluster_role() -> client.V1ClusterRole:
    return client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=ROLE),
        rules=[
            client.V1PolicyRule(
                api_groups=[""],
                resources=["nodes"],
                verbs=["get", "list", "create", "patch", "update", "delete"],
            ),
            client.V1PolicyRule(
                api_groups=[""], resources=["nodes/status"], verbs=["patch", "update"]
            ),
        ],
    )


def cluster_role_binding() -> client.V1ClusterRoleBinding:
    return client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=ROLE),
        role_ref=client.V1RoleRef(api_group=_RBAC_GROUP, kind="ClusterRole", name=ROLE),
        subjects=[client.RbacV1Subject(api_group=_RBAC_GROUP, kind="Group", name=BOOTSTRAP_GROUP)],
    )


async def install_kubelet_rbac(api_client: client.ApiClient) -> None:
    """Create or update the ClusterRole and its binding (idempotent)."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    try:
        await rbac.create_cluster_role(cluster_role())
    except ApiException as error:
        if error.status != 409:
            raise
        await rbac.replace_cluster_role(ROLE, cluster_role())
    try:
        await rbac.create_cluster_role_binding(cluster_role_binding())
    except ApiException as error:
        if error.status != 409:
            raise
        await rbac.replace_cluster_role_binding(ROLE, cluster_role_binding())
