"""Deterministic instance names: the idempotency key of every launch.

`gpuctl-<cluster>-<uid12>-<attempt>`: the cluster's name, the first 12 hex digits
of the request's UID and the attempt number. The same request and attempt always
yield the same name, so a launch interrupted at any point is found again by name
(never launched twice); a new attempt (failover, interruption) gets a new name.
The name is also the Node name (a DNS-1123 label) and the garbage collector's way
of telling whose machine an instance is.
"""

from __future__ import annotations

import re

import attrs

_CLUSTER = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")


def validate_cluster_name(cluster: str) -> str:
    if not _CLUSTER.match(cluster):
        raise ValueError(
            f"cluster name {cluster!r} must be 1-20 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return cluster


def prefix(cluster: str) -> str:
    """The name prefix of every instance this cluster's gpuctl launches."""
    return f"gpuctl-{cluster}-"


def uid_part(uid: str) -> str:
    return uid.replace("-", "").lower()[:12]


def instance_name(cluster: str, uid: str, attempt: int) -> str:
    return f"{prefix(cluster)}{uid_part(uid)}-{attempt}"


@attrs.frozen
class ParsedName:
    uid_part: str
    attempt: int


def parse(cluster: str, name: str) -> ParsedName | None:
    """The request UID part and attempt of an instance name; None if not ours."""
    head = prefix(cluster)
    if not name.startswith(head):
        return None
    match = re.fullmatch(r"([0-9a-f]{12})-([0-9]+)", name[len(head) :])
    if match is None:
        return None
    return ParsedName(match.group(1), int(match.group(2)))
