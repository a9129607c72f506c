"""Kubernetes resource coordinates and their REST paths.

A `Resource` names one kind of object on the API server (group, version, plural,
kind, scope), like client-go's `schema.GroupVersionResource` plus the kind and
whether it is namespaced. `path()` builds the REST path the API server serves it
under:

    core group ("")       /api/v1[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]
    any other group       /apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]

For a namespaced resource, `namespace=None` addresses the collection across all
namespaces (list/watch only). Names are percent-encoded.
"""

from __future__ import annotations

from urllib.parse import quote

import attrs


@attrs.frozen
class Resource:
    """One API resource, e.g. `Resource("", "v1", "nodes", "Node", namespaced=False)`."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """`v1` for the core group, `GROUP/VERSION` otherwise (an object's apiVersion)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_name(self) -> str:
        """`PLURAL` for the core group, `PLURAL.GROUP` otherwise (as kubectl and RBAC say)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The REST path of the collection, one object, or one object's subresource."""
        if namespace is not None and not self.namespaced:
            raise ValueError(f"{self.qualified_name} is cluster-scoped: no namespace allowed")
        if subresource is not None and name is None:
            raise ValueError("a subresource needs an object name")
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if namespace is not None:
            parts += ["namespaces", _segment(namespace)]
        parts.append(self.plural)
        if name is not None:
            parts.append(_segment(name))
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


def _segment(value: str) -> str:
    if not value:
        raise ValueError("empty path segment")
    return quote(value, safe="")


NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SECRETS = Resource("", "v1", "secrets", "Secret", namespaced=True)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
EVENTS = Resource("", "v1", "events", "Event", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
CUSTOM_RESOURCE_DEFINITIONS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
