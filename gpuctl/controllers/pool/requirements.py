"""Would a pod accept a machine with these labels and taints? The scheduler's predicates.

A machine not yet bought is known by the labels and taints it will register with
(`offers.machine_labels`, the pool's template); a machine launching or running by
the same. The checks are the kube-scheduler's filters that depend on the Node, not
on what runs there:

- TaintToleration: every NoSchedule and NoExecute taint is tolerated (startup taints
  are left out by the caller, as Karpenter does: something removes them);
- NodeAffinity: every `nodeSelector` entry equals a label, and one of the required
  node affinity terms holds (all its expressions; a term with `matchFields` can only
  name an existing Node, so it never holds for a new machine).

- NodeResourcesFit, for the one thing a machine's labels decide: its GPUs are the
  extended resource the pod requests (`nvidia.com/gpu` or `amd.com/gpu`, by the GPU
  type's vendor in the catalog): a pod asking for one vendor's GPUs never gets the
  other's machine.

Operators as `NodeSelectorRequirement`: In, NotIn, Exists, DoesNotExist, and Gt/Lt
comparing integers. Each check returns why it fails (None when it holds), so the
Event on a pod no pool can serve says which constraint ruled a machine out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gpuctl.api.constants import LABEL_GPU_TYPE
from gpuctl.controllers.pool import pods as podinfo
from gpuctl.providers import catalog

Obj = dict[str, Any]
Labels = Mapping[str, str]


def holds(key: str, operator: str, values: Sequence[str], labels: Labels) -> bool:
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def describe(key: str, operator: str, values: Sequence[str]) -> str:
    if operator in ("Exists", "DoesNotExist"):
        return f"{key} {operator}"
    return f"{key} {operator} {','.join(values)}"


def unmet(requirements: Iterable[Obj], labels: Labels) -> str | None:
    """The first requirement (dicts with key/operator/values) the labels fail, or None."""
    for req in requirements:
        key, operator, values = req["key"], req["operator"], req.get("values") or []
        if not holds(key, operator, values, labels):
            return describe(key, operator, values)
    return None


def tolerated(toleration: Obj, taint: Obj) -> bool:
    """core/v1 Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    if toleration.get("operator") == "Exists":
        return True  # an empty key with Exists tolerates every taint
    return bool(key) and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(pod: Obj, taints: Sequence[Obj]) -> str | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerated(t, taint) for t in tolerations):
            value = f"={taint['value']}" if taint.get("value") else ""
            return f"does not tolerate taint {taint.get('key')}{value}:{taint.get('effect')}"
    return None


def _required_terms(pod: Obj) -> list[Obj]:
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return list(required.get("nodeSelectorTerms") or [])


def unselected(pod: Obj, labels: Labels) -> str | None:
    """Why `nodeSelector` or required node affinity rule the labels out, or None."""
    for key, value in ((pod.get("spec") or {}).get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    terms = _required_terms(pod)
    if not terms:
        return None
    why = []
    for term in terms:
        if term.get("matchFields"):
            why.append("matchFields (names an existing Node)")
            continue
        expressions = term.get("matchExpressions") or []
        failed = unmet(expressions, labels) if expressions else "an empty term"
        if failed is None:
            return None
        why.append(failed)
    return "node affinity " + " or ".join(why)


def wrong_gpu(pod: Obj, labels: Labels) -> str | None:
    """Why the machine's GPUs (its `gpuctl.io/gpu-type`'s vendor) are not the resource
    the pod requests, or None."""
    wanted = podinfo.gpu_resources(pod)
    gpu_type = labels.get(LABEL_GPU_TYPE, "")
    have = catalog.gpu_resource(gpu_type)
    if not wanted or wanted == {have}:
        return None
    if len(wanted) > 1:
        return f"requests {' and '.join(sorted(wanted))}; a machine has one vendor's GPUs"
    return f"requests {min(wanted)}; {gpu_type or 'its'} machines advertise {have}"


def rejects(pod: Obj, labels: Labels, taints: Sequence[Obj]) -> str | None:
    """Why the pod would not go to a machine with these labels and taints, or None."""
    return untolerated(pod, taints) or unselected(pod, labels) or wrong_gpu(pod, labels)
