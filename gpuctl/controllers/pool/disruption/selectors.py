"""Label selectors (metav1.LabelSelector), as apimachinery's `labels.Selector` reads them.

`matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist: the
provisioner's `requirements.holds`) must all hold. A nil selector matches nothing (as
a PDB's), an empty one everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuctl.controllers.pool.requirements import holds

Obj = dict[str, Any]


def label_selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        holds(r.get("key", ""), r.get("operator", ""), r.get("values") or [], labels)
        for r in selector.get("matchExpressions") or []
    )
