"""Command lines of kube-controller-manager and kube-scheduler, as kubeadm runs them.

Each component authenticates with its own client certificate (`system:kube-controller-manager`,
`system:kube-scheduler`: the users the API server's bootstrap RBAC policy grants their
roles), serves its health endpoints on a free loopback port, and runs without leader
election (one of each). Unlike kubeadm they get no `--authentication-kubeconfig`:
that needs the front-proxy CA (requestheader) this cluster does not run, and only
`/healthz`, which is always allowed, is used here.

kube-controller-manager runs the controllers a kubeadm cluster relies on for joins and
node life (`CONTROLLERS`): CSR approving/signing/cleaning with the cluster CA,
bootstrap-token signing of `cluster-info` and cleaning of expired tokens, node
lifecycle (NotReady/Unknown, taints) and taint eviction, garbage collection, service
account tokens, namespaces, the workload controllers that turn Deployments into
Pods, and the disruption controller (PodDisruptionBudget status: the eviction API
refuses evictions under a PDB whose status nobody computed).
`--use-service-account-credentials` gives each controller its own identity, as
kubeadm does.
"""

from __future__ import annotations

from pathlib import Path

import attrs

CONTROLLERS = (
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-cleaner-controller",
    "bootstrap-signer-controller",
    "token-cleaner-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "garbage-collector-controller",
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "pod-garbage-collector-controller",
    "disruption-controller",
)


@attrs.frozen
class ComponentPaths:
    """Files both components read: their kubeconfigs and the cluster PKI."""

    bin_dir: Path
    pki_dir: Path
    controller_manager_kubeconfig: Path
    scheduler_kubeconfig: Path


def controller_manager_args(paths: ComponentPaths, port: int, node_monitor_grace: str) -> list[str]:
    pki = paths.pki_dir
    kubeconfig = paths.controller_manager_kubeconfig
    return [
        str(paths.bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={pki / 'controller-manager'}",
        "--leader-elect=false",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        "--use-service-account-credentials=true",
        "--node-monitor-period=2s",
        f"--node-monitor-grace-period={node_monitor_grace}",
    ]


def scheduler_args(paths: ComponentPaths, port: int) -> list[str]:
    kubeconfig = paths.scheduler_kubeconfig
    return [
        str(paths.bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={paths.pki_dir / 'scheduler'}",
        "--leader-elect=false",
    ]
