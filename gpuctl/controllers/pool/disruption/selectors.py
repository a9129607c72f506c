"""Label selectors (metav1.LabelSelector) and node selector requirements (core/v1).

Semantics as apimachinery's `labels.Selector` and the scheduler's node affinity:
In, NotIn, Exists, DoesNotExist; node requirements add Gt and Lt (integers). A
nil label selector matches nothing (as a PDB's), an empty one everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


def requirement_matches(req: Obj, labels: Mapping[str, str]) -> bool:
    key, op = req.get("key", ""), req.get("operator", "")
    values = req.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def label_selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(requirement_matches(r, labels) for r in selector.get("matchExpressions") or [])


def node_term_matches(term: Obj, labels: Mapping[str, str], fields: Mapping[str, str]) -> bool:
    """One nodeSelectorTerm: all its expressions (labels) and fields (metadata.name) hold."""
    expressions = term.get("matchExpressions") or []
    field_reqs = term.get("matchFields") or []
    if not expressions and not field_reqs:
        return False  # an empty term matches no node
    return all(requirement_matches(r, labels) for r in expressions) and all(
        requirement_matches(r, fields) for r in field_reqs
    )
