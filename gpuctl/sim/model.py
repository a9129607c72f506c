"""Records the simulator keeps and hands out: instances, ledger entries, violations.

A `SimInstance` is one machine of any cloud in a cloud-neutral `Phase`; each
cloud module renders the phase as its own status values. `LedgerEntry` is one
HTTP exchange with a simulated cloud; `Violation` is a request or a response
that did not match the cloud's published OpenAPI spec.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs


class Phase(enum.StrEnum):
    BOOTING = "booting"  # launched; boot_seconds not yet elapsed
    RUNNING = "running"
    STOPPED = "stopped"  # stopped by the user (RunPod stop)
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    PREEMPTED = "preempted"  # spot capacity reclaimed by the cloud

    @property
    def live(self) -> bool:
        """Exists and is billed or may be again."""
        return self not in (Phase.TERMINATING, Phase.TERMINATED)


class JoinStatus(enum.StrEnum):
    """What became of the machine's join data (docs/sim.md#machines)."""

    PENDING = "pending"  # not booted yet
    DISABLED = "disabled"  # SimConfig.execute_join_data is off: nothing runs
    NO_JOIN_DATA = "no-join-data"  # nothing to run (no user data, script or start command)
    NOT_RUN = "not-run"  # the cloud would not run it (format, size): join_detail says why
    RUNNING = "running"  # the boot program runs
    JOINED = "joined"  # the kubelet has its client credentials (TLS bootstrap done)
    NOT_JOINED = "not-joined"  # the boot program exited 0 without joining
    FAILED = "failed"  # the boot program failed (or the machine did not boot)
    CONTAINER_EXITED = "container-exited"  # a container's main process exited: it stopped
    INTERRUPTED = "interrupted"  # the machine stopped or went away while it ran


@attrs.define
class SimInstance:
    """One simulated machine. Snapshots are handed out; the simulator owns the original."""

    cloud: str
    id: str
    name: str
    instance_type: str  # Lambda type name, RunPod gpuTypeId, Paperspace machineType
    region: str  # native region / data centre id
    gpu_count: int
    vcpus: int
    memory_gib: int
    spot: bool
    price_per_hour: float  # USD, what the cloud bills for this instance
    created_at: float
    phase: Phase = Phase.BOOTING
    phase_since: float = 0.0
    state: str = ""  # the cloud's own status value, filled in on snapshots
    running_at: float | None = None  # when the current boot completes
    terminated_at: float | None = None
    interrupt_at: float | None = None  # scheduled spot interruption
    join_script: str = ""  # Lambda user_data, Paperspace startup script, RunPod start cmd
    join_env: Mapping[str, str] = attrs.field(factory=dict)  # RunPod container env
    join_status: JoinStatus = JoinStatus.PENDING
    join_detail: str = ""
    node_name: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    capacity_units: int = 1  # instances (Lambda, Paperspace) or GPUs (RunPod) held
    holds_capacity: bool = True
    request: Mapping[str, Any] = attrs.field(factory=dict)  # the create request as sent

    def as_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["phase"] = self.phase.value
        data["join_status"] = self.join_status.value
        data["join_env"] = dict(self.join_env)
        data["request"] = dict(self.request)
        return data


@attrs.frozen
class LedgerEntry:
    cloud: str
    method: str
    path: str
    operation: str | None  # the spec's operationId; None when the path is not in the spec
    status: int  # 0: no answer (a "timeout" fault dropped the connection)
    body: Any  # the request body, decoded JSON when it parses, else text, None if empty
    time: float
    query: Mapping[str, str] = attrs.field(factory=dict)
    violation: str | None = None
    fault: str | None = None
    duration: float = 0.0

    def as_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["query"] = dict(self.query)
        return data


@attrs.frozen
class Violation:
    cloud: str
    direction: str  # "request" (the client broke the spec) or "response" (a sim bug)
    method: str
    path: str
    operation: str | None
    status: int
    message: str
    time: float

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)
