"""The pods a manifest would create, as the scheduler would see them pending (for `gpuctl plan`).

A Pod is itself; a Deployment, ReplicaSet or StatefulSet makes `spec.replicas` (default 1)
pods of `spec.template`; a Job `spec.parallelism` (default 1); a CronJob its job
template's. Each pod gets a made-up name and uid (`<workload>-<n>`) and the status a pod
has once the kube-scheduler failed to place it, so `pods.provisionable` takes it; pods
that ask for no GPUs are not provisionable and drop out there, as in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
REPLICATED = {"Deployment", "ReplicaSet", "StatefulSet"}
UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}


def _template(document: Obj) -> tuple[Obj, int] | None:
    kind, spec = document.get("kind"), document.get("spec") or {}
    if kind in REPLICATED:
        return spec.get("template") or {}, int(spec.get("replicas", 1))
    if kind == "Job":
        return spec.get("template") or {}, int(spec.get("parallelism", 1))
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return job.get("template") or {}, int(job.get("parallelism", 1))
    if kind == "Pod":
        return document, 1
    return None


def pods_of(documents: Iterable[Obj]) -> list[Obj]:
    """The pending pods of every workload among `documents` (other kinds are skipped)."""
    found: list[Obj] = []
    for document in documents:
        shape = _template(document)
        if shape is None:
            continue
        template, count = shape
        meta = document.get("metadata") or {}
        name, namespace = str(meta.get("name", "pod")), str(meta.get("namespace", "default"))
        for index in range(count):
            pod_name = name if document.get("kind") == "Pod" else f"{name}-{index}"
            found.append(
                {
                    "metadata": {
                        "name": pod_name,
                        "namespace": namespace,
                        "uid": f"plan-{namespace}-{pod_name}",
                        "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                    },
                    "spec": dict(template.get("spec") or {}),
                    "status": {"phase": "Pending", "conditions": [dict(UNSCHEDULABLE)]},
                }
            )
    return found
