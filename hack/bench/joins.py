"""When the machines' Nodes registered and became Ready, and how long each join took.

- `NodeTracker`: an informer handler on the Nodes gpuctl's machines register (label
  `gpuctl.io/instance-name`, set by the kubelet's `--node-labels`): wall-clock time when
  the watch first delivered each Node (registered), first delivered it with the `Ready`
  condition `True`, and first Ready with `nvidia.com/gpu` allocatable (the device
  plugin registered: what gpuctl waits for before it calls a request Ready); how many
  are Ready now and at most at once.
- `join_latencies`: per machine, from the simulator's instance snapshot
  (`running_at`: the instance turned RUNNING and the simulator booted its machine),
  the machine's process start times (bench.machines) and the Node's times:
  RUNNING -> first node-agent process (`kubeadm join`), agent start -> Node
  registered, agent start -> Node Ready, RUNNING -> Node Ready; and, per request,
  Node Ready with its GPUs -> the request seen Ready (the operator's share).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from bench.figures import Summary
from bench.machines import MachineTimes, boot_to_wall

JSON = dict[str, Any]
INSTANCE_LABEL = "gpuctl.io/instance-name"
REQUEST_LABEL = "gpuctl.io/request"
GPU = "nvidia.com/gpu"


@attrs.define
class NodeTimes:
    instance_name: str | None = None  # the Node's gpuctl.io/instance-name label
    request: str | None = None  # its gpuctl.io/request label
    registered: float | None = None  # wall clock, first seen by the watch
    ready: float | None = None  # wall clock, first seen with Ready=True
    usable: float | None = None  # wall clock, first seen Ready with nvidia.com/gpu allocatable


def is_ready(node: JSON) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def gpus(node: JSON) -> int:
    """nvidia.com/gpu allocatable on `node` (0 if none is advertised)."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get(GPU, "0")
    try:
        return int(value)
    except ValueError:
        return 0


class NodeTracker:
    """Informer handler stamping when each Node registered and first was Ready."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.nodes: dict[str, NodeTimes] = {}
        self.ready_now: set[str] = set()
        self.most_ready = 0

    def on_add(self, obj: JSON) -> None:
        self._see(obj)

    def on_update(self, old: JSON, new: JSON) -> None:
        self._see(new)

    def on_delete(self, obj: JSON) -> None:
        self.ready_now.discard(obj["metadata"]["name"])

    def _see(self, obj: JSON) -> None:
        now = self.clock()
        name = obj["metadata"]["name"]
        times = self.nodes.setdefault(name, NodeTimes())
        labels = obj["metadata"].get("labels") or {}
        times.instance_name = labels.get(INSTANCE_LABEL)
        times.request = labels.get(REQUEST_LABEL)
        if times.registered is None:
            times.registered = now
        if is_ready(obj):
            if times.ready is None:
                times.ready = now
            if times.usable is None and gpus(obj) > 0:
                times.usable = now
            self.ready_now.add(name)
            self.most_ready = max(self.most_ready, len(self.ready_now))
        else:
            self.ready_now.discard(name)

    @property
    def registered(self) -> int:
        return len(self.nodes)

    @property
    def ever_ready(self) -> int:
        return sum(t.ready is not None for t in self.nodes.values())


@attrs.frozen
class JoinLatencies:
    running_to_agent: Summary | None
    agent_to_registered: Summary | None
    agent_to_ready: Summary | None
    running_to_ready: Summary | None
    ready_to_usable: Summary | None  # Node Ready -> Ready with its GPUs allocatable
    usable_to_request_ready: Summary | None  # ... -> the request seen Ready
    matched: int  # machines whose instance, processes and Node were all found


def join_latencies(
    instances: Sequence[JSON],
    machines: Mapping[str, MachineTimes],
    nodes: Mapping[str, NodeTimes],
    request_ready: Mapping[str, float] | None = None,
    to_wall: Callable[[float], float] = boot_to_wall,
) -> JoinLatencies:
    """Per-machine join timings (see the module docstring), in seconds.

    A machine is `<cloud>-<id>` (its directory); its Node is the instance's `node_name`
    (what the simulator read from the kubelet's --hostname-override), else the Node
    whose instance-name label is the instance's name. `request_ready`: request name ->
    wall-clock time its Ready was seen.
    """
    ready_to_usable = [t.usable - t.ready for t in nodes.values() if t.usable and t.ready]
    usable_to_request = [
        when - t.usable
        for t in nodes.values()
        if t.usable and t.request and (when := (request_ready or {}).get(t.request)) is not None
    ]
    by_label = {t.instance_name: t for t in nodes.values() if t.instance_name}
    to_agent, to_registered, to_ready, running_to_ready = [], [], [], []
    matched = 0
    for instance in instances:
        running = instance.get("running_at")
        machine = machines.get(f"{instance['cloud']}-{instance['id']}")
        node = nodes.get(instance.get("node_name") or "") or by_label.get(str(instance.get("name")))
        agent = to_wall(machine.agent) if machine and machine.agent is not None else None
        if running is not None and agent is not None:
            to_agent.append(agent - running)
        if node is None:
            continue
        if agent is not None and node.registered is not None:
            to_registered.append(node.registered - agent)
        if agent is not None and node.ready is not None:
            to_ready.append(node.ready - agent)
        if running is not None and node.ready is not None:
            running_to_ready.append(node.ready - running)
            matched += agent is not None
    return JoinLatencies(
        Summary.of(to_agent),
        Summary.of(to_registered),
        Summary.of(to_ready),
        Summary.of(running_to_ready),
        Summary.of(ready_to_usable),
        Summary.of(usable_to_request),
        matched,
    )
