"""What the operator caches of each kind it watches (its informers' transforms).

Like controller-runtime's per-type cache `Transform`: a Node or a Secret is cut down
to the fields some gpuctl controller or the dashboard reads before it is stored, and
every kept string that repeats across objects is interned (gpuctl/runtime/transform.py).
Adding a reader of another field means adding the field here: a field not listed is
simply absent from the cached object (tests/unit/test_transforms.py checks that the
readers find what they need).

- Nodes: name, uid, resourceVersion, labels, creation/deletion time; `spec.providerID`,
  `taints`, `unschedulable`; the `Ready` one of `status.conditions` (type, status,
  reason, message, lastTransitionTime: the pressure conditions are read by nobody),
  `allocatable`, `capacity`. Dropped: annotations, images,
  nodeInfo, addresses, daemonEndpoints, volumes, heartbeat times, managedFields -- 80 %
  of a Node as the kubelet registers it.
- Secrets (the operator's namespace only): metadata as for Nodes plus namespace, `type`
  and `data`. Dropped: annotations (`kubectl apply` keeps a second copy of the whole
  Secret in one), managedFields.
- Pods (every namespace; the pool provisioner and disruption read them): metadata as for
  Nodes plus namespace and annotations (`gpuctl.io/do-not-disrupt`, mirror pods);
  `spec.nodeName`, `nodeSelector`, `affinity`, `tolerations`, `priority`, `overhead`,
  containers' and init containers' `name` and `resources`; `status.phase`,
  `nominatedNodeName`, `conditions` (type, status, reason). Dropped: images, commands,
  env, volumes, probes, container statuses -- most of a pod.
- GPUNodeRequests, GPUProviders, GPUNodePools: everything the API server sends but managedFields and
  the `kubectl.kubernetes.io/last-applied-configuration` annotation (a copy of the
  spec); controllers read spec and status whole.
- Stored once however many objects hold them (`Shared`): a Node's `capacity`,
  `allocatable` and `taints`, a custom resource's `spec` (equal values only).
"""

from __future__ import annotations

from typing import Any

from gpuctl.runtime.transform import Fields, Shared, drop_managed_fields, interned, keep

JSON = dict[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_METADATA: Fields = {
    "name": True,
    "namespace": True,
    "uid": True,
    "resourceVersion": True,
    "generation": True,
    "labels": True,
    "creationTimestamp": True,
    "deletionTimestamp": True,
    "finalizers": True,
    "ownerReferences": True,
}

NODE_FIELDS: Fields = {
    "apiVersion": True,
    "kind": True,
    "metadata": _METADATA,
    "spec": {"providerID": True, "taints": True, "unschedulable": True},
    "status": {
        "conditions": {
            "type": True,
            "status": True,
            "reason": True,
            "message": True,
            "lastTransitionTime": True,
        },
        "allocatable": True,
        "capacity": True,
    },
}

SECRET_FIELDS: Fields = {
    "apiVersion": True,
    "kind": True,
    "metadata": _METADATA,
    "type": True,
    "data": True,
}


_CONTAINER: Fields = {"name": True, "resources": True}
POD_FIELDS: Fields = {
    "apiVersion": True,
    "kind": True,
    "metadata": {**_METADATA, "annotations": True},
    "spec": {
        "nodeName": True,
        "nodeSelector": True,
        "affinity": True,
        "tolerations": True,
        "priority": True,
        "overhead": True,
        "containers": _CONTAINER,
        "initContainers": _CONTAINER,
    },
    "status": {
        "phase": True,
        "nominatedNodeName": True,
        "conditions": {"type": True, "status": True, "reason": True},
    },
}


# Parts that repeat across objects, stored once (gpuctl/runtime/transform.py `Shared`).
_shared = Shared()


def node(obj: JSON) -> JSON:
    kept: JSON = interned(keep(obj, NODE_FIELDS))
    spec, status = kept.get("spec"), kept.get("status")
    if isinstance(spec, dict) and "taints" in spec:
        spec["taints"] = _shared(spec["taints"])
    if isinstance(status, dict):
        if "conditions" in status:  # only Ready is read (request steps, dashboard)
            status["conditions"] = [c for c in status["conditions"] if c.get("type") == "Ready"]
        for name in ("capacity", "allocatable"):
            if name in status:
                status[name] = _shared(status[name])
    return kept


def pod(obj: JSON) -> JSON:
    return interned(keep(obj, POD_FIELDS))  # type: ignore[no-any-return]


def secret(obj: JSON) -> JSON:
    return interned(keep(obj, SECRET_FIELDS))  # type: ignore[no-any-return]


def custom_resource(obj: JSON) -> JSON:
    """A GPUNodeRequest or GPUProvider: all but managedFields and the last-applied copy."""
    drop_managed_fields(obj)
    annotations = (obj.get("metadata") or {}).get("annotations")
    if annotations and LAST_APPLIED in annotations:
        annotations.pop(LAST_APPLIED)
        if not annotations:
            del obj["metadata"]["annotations"]
    kept: JSON = interned(obj)
    if isinstance(kept.get("spec"), dict):
        kept["spec"] = _shared(kept["spec"])  # a pool's requests (and copies) share one
    return kept
