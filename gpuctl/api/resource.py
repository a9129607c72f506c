"""What both kinds share: reading from and writing to API server JSON.

A kind is an attrs class with `metadata`, `spec` and `status` fields and the class
attributes `KIND` and `PLURAL`. `from_dict` reads a whole object as returned by the
API server (or a watch event's object); `to_dict` writes the whole object (for
create or a full replace, including a PUT to the status subresource);
`status_to_dict` writes the status alone, complete (for a merge patch, remember
that a key left out keeps the server's value: clear a field with an explicit None).

`metadata` keeps only the fields `ObjectMeta` models, so a PUT of `to_dict()` to
the main resource would drop the others (ownerReferences, ...): change metadata
of an existing object with a patch (e.g. of `metadata.finalizers`, carrying
`resourceVersion` for optimistic concurrency) instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from gpuctl.api.constants import API_VERSION
from gpuctl.api.convert import ObjectError, structure, unstructure
from gpuctl.api.meta import ObjectMeta


class Resource:
    """Mixin for the attrs classes of gpuctl's kinds."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    metadata: ObjectMeta
    status: Any

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        """Read an object as served by the API server; unknown fields are ignored."""
        kind = obj.get("kind")
        if kind is not None and kind != cls.KIND:
            raise ObjectError(f"expected kind {cls.KIND}, got {kind}")
        return structure(obj, cls)

    def to_dict(self) -> dict[str, Any]:
        """The whole object as JSON for the API server; None fields are left out."""
        body: dict[str, Any] = unstructure(self)
        return {"apiVersion": API_VERSION, "kind": self.KIND, **body}

    def status_to_dict(self) -> dict[str, Any]:
        """`.status` alone as JSON, with every set field (None fields left out)."""
        status: dict[str, Any] = unstructure(self.status)
        return status

    @property
    def name(self) -> str:
        return self.metadata.name
