"""GPUNodePool (gpuctl.io/v1alpha1, cluster-scoped, short name `gnp`): capacity that follows pods.

A pool says what machines gpuctl may rent for pending GPU pods (the `template`:
Node labels and taints, requirements over gpuctl's keys, a price cap per machine),
how much in total (`limits`: GPUs, machines, USD per hour, counting machines still
launching), and when machines go away again (`disruption`: consolidation, expiry,
budgets). It is Karpenter's NodePool for GPU clouds: the provisioner turns pods the
kube-scheduler marked Unschedulable into GPUNodeRequests owned by the pool; the
disruption controller removes or replaces machines nobody needs.

Requirement keys are the Node labels every pool machine carries (docs/pools.md):
gpuctl's own (`gpuctl.io/gpu-type`, `gpu-count`, `capacity-type`, `provider`,
`region`) and the well-known `node.kubernetes.io/instance-type` and
`topology.kubernetes.io/region`. A price is not a Node label (the scheduler's Gt/Lt
compare integers only), so the price cap per machine is `template.maxPricePerHour`.
"""

from __future__ import annotations

import datetime
import enum
from decimal import Decimal

import attrs

from gpuctl.api.constants import (
    GNP_KIND,
    GNP_PLURAL,
    LABEL_CAPACITY_TYPE,
    LABEL_GPU_COUNT,
    LABEL_GPU_TYPE,
    LABEL_INSTANCE_TYPE,
    LABEL_PROVIDER,
    LABEL_REGION,
    LABEL_TOPOLOGY_REGION,
    Region,
)
from gpuctl.api.gpunoderequest import (
    _LABEL_KEYS_NOT_RESERVED,
    _LABEL_KEYS_VALID,
    _POSITIVE_PRICE,
    GPU_TYPE_PATTERN,
    Taint,
    duration_doc,
)
from gpuctl.api.meta import LABEL_VALUE_PATTERN, MAX_CONDITIONS, Condition, ObjectMeta
from gpuctl.api.resource import Resource
from gpuctl.api.schema import FieldDoc, Rule, cel_string, doc, item
from gpuctl.api.units import DURATION_PATTERN, PRICE_PATTERN, parse_duration

NEVER = "Never"
# A Go duration or Never (Karpenter's NillableDuration).
DURATION_OR_NEVER_PATTERN = f"^(Never|{DURATION_PATTERN[1:-1]})$"
# Karpenter's budget patterns: a count or a percentage; cron's five fields or a macro;
# whole minutes or hours for the duration (cron does not work in seconds).
BUDGET_NODES_PATTERN = r"^((100|[0-9]{1,2})%|[0-9]+)$"
CRON_PATTERN = (
    r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))$|^(\S+\s+\S+\s+\S+\s+\S+\s+\S+)$"
)
BUDGET_DURATION_PATTERN = r"^(([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?$"
DEFAULT_BUDGET_NODES = "10%"
MAX_REQUIREMENTS = 32
MAX_VALUES = 64
MAX_BUDGETS = 50


class RequirementOperator(enum.StrEnum):
    """The operators of Node affinity (`NodeSelectorRequirement`)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class RequirementKey(enum.StrEnum):
    """The Node labels a pool's requirements may constrain (every pool machine has them)."""

    GPU_TYPE = LABEL_GPU_TYPE
    GPU_COUNT = LABEL_GPU_COUNT
    CAPACITY_TYPE = LABEL_CAPACITY_TYPE
    PROVIDER = LABEL_PROVIDER
    REGION = LABEL_REGION
    INSTANCE_TYPE = LABEL_INSTANCE_TYPE
    TOPOLOGY_REGION = LABEL_TOPOLOGY_REGION


class ConsolidationPolicy(enum.StrEnum):
    WHEN_EMPTY = "WhenEmpty"  # remove machines with no pods (but DaemonSet/mirror pods)
    WHEN_EMPTY_OR_UNDERUTILIZED = "WhenEmptyOrUnderutilized"  # also replace or merge


class DisruptionReason(enum.StrEnum):
    """Why a machine is disrupted; a budget may apply to some reasons only."""

    EMPTY = "Empty"
    UNDERUTILIZED = "Underutilized"
    EXPIRED = "Expired"


class ScaleAction(enum.StrEnum):
    SCALE_UP = "ScaleUp"  # GPUNodeRequests created for pending pods
    SCALE_DOWN = "ScaleDown"  # machines removed (disruption)
    BLOCKED = "Blocked"  # pods wait: a limit, or no offer fits them
    NONE = "None"  # pending pods fit machines that exist or are launching


# -- spec ------------------------------------------------------------------------

_INTEGER = "^[0-9]{1,9}$"
_VALUES = "(has(self.values) ? self.values : [])"  # values may be left out
_VALUE_RULES = (
    Rule(
        f"self.operator in ['In', 'NotIn'] ? size({_VALUES}) > 0 : true",
        "operators In and NotIn need at least one value",
        field_path=".values",
    ),
    Rule(
        f"self.operator in ['Exists', 'DoesNotExist'] ? size({_VALUES}) == 0 : true",
        "operators Exists and DoesNotExist take no values",
        field_path=".values",
    ),
    Rule(
        f"self.operator in ['Gt', 'Lt'] ? (size({_VALUES}) == 1 && "
        f"{_VALUES}[0].matches({cel_string(_INTEGER)})) : true",
        "operators Gt and Lt need exactly one value, a non-negative integer",
        field_path=".values",
    ),
    Rule(
        f"self.operator in ['Gt', 'Lt'] ? self.key == {cel_string(LABEL_GPU_COUNT)} : true",
        f"operators Gt and Lt only apply to the integer key {LABEL_GPU_COUNT}",
        field_path=".operator",
    ),
    Rule(
        f"self.key == {cel_string(LABEL_GPU_COUNT)} ? "
        f"{_VALUES}.all(v, v.matches({cel_string(_INTEGER)})) : true",
        f"values of {LABEL_GPU_COUNT} must be non-negative integers",
        field_path=".values",
    ),
    Rule(
        f"self.key == {cel_string(LABEL_GPU_TYPE)} ? "
        f"{_VALUES}.all(v, v.matches({cel_string(GPU_TYPE_PATTERN)})) : true",
        f"values of {LABEL_GPU_TYPE} must be normalised GPU names like H100-80GB",
        field_path=".values",
    ),
    Rule(
        f"self.key == {cel_string(LABEL_CAPACITY_TYPE)} ? "
        f"{_VALUES}.all(v, v in ['on-demand', 'spot']) : true",
        f"values of {LABEL_CAPACITY_TYPE} must be on-demand or spot",
        field_path=".values",
    ),
    Rule(
        f"self.key == {cel_string(LABEL_REGION)} ? "
        f"{_VALUES}.all(v, v in [{', '.join(cel_string(r) for r in Region)}]) : true",
        f"values of {LABEL_REGION} must be gpuctl's normalised regions: " + ", ".join(Region),
        field_path=".values",
    ),
)


@attrs.define(kw_only=True)
class Requirement:
    """One Node-affinity-like constraint on the machines of the pool."""

    __validations__ = _VALUE_RULES

    key: RequirementKey = attrs.field(
        metadata=doc(
            "The Node label constrained: "
            + ", ".join(RequirementKey)
            + f". {LABEL_PROVIDER} is the GPUProvider's name, {LABEL_REGION} gpuctl's "
            f"normalised region, {LABEL_TOPOLOGY_REGION} the cloud's own region."
        )
    )
    operator: RequirementOperator = attrs.field(
        metadata=doc(
            "In, NotIn, Exists, DoesNotExist, Gt or Lt, as in Node affinity "
            f"(Gt and Lt only for {LABEL_GPU_COUNT})."
        )
    )
    values: list[str] = attrs.field(
        factory=list,
        metadata=doc(
            "Values: one or more for In and NotIn, exactly one integer for Gt and Lt, "
            "none for Exists and DoesNotExist.",
            max_items=MAX_VALUES,
            list_type="set",
            items=item(pattern=LABEL_VALUE_PATTERN, max_length=63),
        ),
    )


@attrs.define(kw_only=True)
class PoolTemplate:
    labels: dict[str, str] = attrs.field(
        factory=dict,
        metadata=doc(
            "Labels every machine's Node gets, in addition to gpuctl's own (the gpuctl.io/ "
            "prefix is reserved). Pods select the pool's machines by them.",
            max_properties=64,
            items=item(pattern=LABEL_VALUE_PATTERN, max_length=63),
            rules=[_LABEL_KEYS_VALID, _LABEL_KEYS_NOT_RESERVED],
        ),
    )
    taints: list[Taint] = attrs.field(
        factory=list,
        metadata=doc(
            "Taints every machine's Node gets; only pods that tolerate them make the pool "
            "launch machines.",
            max_items=32,
        ),
    )
    startup_taints: list[Taint] = attrs.field(
        factory=list,
        metadata=doc(
            "Taints the Node registers with that something else (typically a DaemonSet) "
            "removes once the machine is initialised; pods need not tolerate them.",
            max_items=32,
        ),
    )
    requirements: list[Requirement] = attrs.field(
        factory=list,
        metadata=doc(
            "Constraints on the machines the pool may rent, ANDed (GPU type, GPUs per "
            "machine, capacity type, provider, region, instance type). Pods narrow them "
            "further with nodeSelector and required node affinity on the same labels. "
            "Without a capacity-type requirement the pool rents on-demand only.",
            max_items=MAX_REQUIREMENTS,
        ),
    )
    max_price_per_hour: Decimal | None = attrs.field(
        default=None,
        metadata=doc(
            "Highest price of one machine in USD per hour, as a decimal string "
            '(e.g. "25"); must be greater than 0. Unset: no cap per machine.',
            pattern=PRICE_PATTERN,
            max_length=16,
            rules=[_POSITIVE_PRICE],
        ),
    )
    min_gpu_memory_gib: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Least memory per GPU in GiB, from gpuctl's GPU catalog (e.g. 80 keeps "
            "A100-40GB out). Unset: any. (Offers do not state vCPUs or host memory on "
            "every cloud, so there are no minimums for those.)",
            name="minGPUMemoryGiB",
            minimum=1,
            maximum=4096,
        ),
    )
    registration_timeout: str | None = attrs.field(
        default=None,
        metadata=duration_doc(
            "How long a launched machine may take to register as a Node before it is "
            "torn down and another offer tried. Unset: the GPUProvider's."
        ),
    )


@attrs.define(kw_only=True)
class Limits:
    gpus: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Most GPUs across the pool's machines, launching ones included. Unset: no limit.",
            minimum=0,
        ),
    )
    machines: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Most machines in the pool, launching ones included. Unset: no limit.", minimum=0
        ),
    )
    price_per_hour: Decimal | None = attrs.field(
        default=None,
        metadata=doc(
            "Most USD per hour across the pool's machines (a launching machine counts "
            'at its price cap), as a decimal string, e.g. "100". Unset: no limit.',
            pattern=PRICE_PATTERN,
            max_length=16,
        ),
    )


def _duration_or_never(description: str) -> dict[str, FieldDoc]:
    return doc(description, pattern=DURATION_OR_NEVER_PATTERN, max_length=64)


@attrs.define(kw_only=True)
class Budget:
    nodes: str = attrs.field(
        default=DEFAULT_BUDGET_NODES,
        metadata=doc(
            "Most machines of the pool disrupted at once: a count (e.g. 2) or a "
            "percentage of the pool's machines, rounded up (e.g. 10%). 0 blocks "
            "disruption while the budget is active.",
            pattern=BUDGET_NODES_PATTERN,
            max_length=8,
        ),
    )
    schedule: str | None = attrs.field(
        default=None,
        metadata=doc(
            "When the budget becomes active, in cron syntax (minute hour day-of-month "
            'month day-of-week, UTC, e.g. "0 9 * * 1-5", or @daily). Requires duration. '
            "Unset: always active.",
            pattern=CRON_PATTERN,
            max_length=128,
        ),
    )
    duration: str | None = attrs.field(
        default=None,
        metadata=doc(
            "How long the budget stays active after each schedule hit, in whole minutes "
            "or hours (e.g. 8h, 30m, 1h30m). Requires schedule.",
            pattern=BUDGET_DURATION_PATTERN,
            max_length=16,
        ),
    )
    reasons: list[DisruptionReason] = attrs.field(
        factory=list,
        metadata=doc(
            "The disruption reasons the budget applies to: Empty, Underutilized, Expired. "
            "Unset or empty: all.",
            max_items=len(DisruptionReason),
            list_type="set",
        ),
    )


_SCHEDULE_WITH_DURATION = Rule(
    "self.all(b, has(b.schedule) == has(b.duration))",
    "schedule and duration must be set together",
)


@attrs.define(kw_only=True)
class Disruption:
    consolidation_policy: ConsolidationPolicy = attrs.field(
        default=ConsolidationPolicy.WHEN_EMPTY_OR_UNDERUTILIZED,
        metadata=doc(
            "Which machines may be consolidated: WhenEmpty (only machines running no "
            "pods but DaemonSet and mirror pods) or WhenEmptyOrUnderutilized (default; "
            "also machines whose pods fit elsewhere or on a cheaper replacement)."
        ),
    )
    consolidate_after: str = attrs.field(
        default="0s",
        metadata=_duration_or_never(
            "How long a machine must have been a candidate (empty, or underutilized) "
            "before it is consolidated, as a Go duration (e.g. 5m), or Never. Default 0s."
        ),
    )
    expire_after: str = attrs.field(
        default="720h",
        metadata=_duration_or_never(
            "Age at which a machine is replaced (a new one first, then drain, then "
            "terminate), as a Go duration, or Never. Default 720h (30 days)."
        ),
    )
    budgets: list[Budget] = attrs.field(
        factory=list,
        metadata=doc(
            "Limits on how many machines are disrupted at once; when several are active "
            'the most restrictive applies. Unset or empty: one budget of nodes "10%".',
            max_items=MAX_BUDGETS,
            rules=[_SCHEDULE_WITH_DURATION],
        ),
    )

    def consolidate_after_delta(self) -> datetime.timedelta | None:
        """None means Never."""
        return None if self.consolidate_after == NEVER else parse_duration(self.consolidate_after)

    def expire_after_delta(self) -> datetime.timedelta | None:
        """None means Never."""
        return None if self.expire_after == NEVER else parse_duration(self.expire_after)


@attrs.define(kw_only=True)
class GPUNodePoolSpec:
    template: PoolTemplate = attrs.field(
        metadata=doc(
            "What every machine of the pool is and gets: requirements on the offer, a "
            "price cap, Node labels and taints. Machines bootstrap as their GPUProvider says."
        )
    )
    limits: Limits | None = attrs.field(
        default=None,
        metadata=doc(
            "Bounds on the whole pool, counting machines still launching; a pod that "
            "would exceed one waits (Event LimitReached on the pod). Unset: no bounds."
        ),
    )
    disruption: Disruption = attrs.field(
        factory=Disruption,
        metadata=doc("When machines are removed or replaced, and how many at once."),
    )
    weight: int | None = attrs.field(
        default=None,
        metadata=doc(
            "Priority among pools, 1 to 100: a pod is served by the pool of highest "
            "weight that can serve it; pools of equal weight (unset counts as 0) compete "
            "on price.",
            minimum=1,
            maximum=100,
        ),
    )


# -- status ----------------------------------------------------------------------


@attrs.define(kw_only=True)
class ScaleDecision:
    at: datetime.datetime = attrs.field(metadata=doc("When the decision was made."))
    action: ScaleAction = attrs.field(
        metadata=doc("ScaleUp, ScaleDown, Blocked (a limit or no offer) or None.")
    )
    machines: int = attrs.field(
        default=0, metadata=doc("Machines created (ScaleUp) or removed (ScaleDown).", minimum=0)
    )
    pods: int = attrs.field(default=0, metadata=doc("Pending pods considered.", minimum=0))
    price_per_hour: Decimal | None = attrs.field(
        default=None,
        metadata=doc(
            "USD per hour the decision adds (ScaleUp) or saves (ScaleDown).", max_length=32
        ),
    )
    message: str = attrs.field(
        default="", metadata=doc("What was decided and why.", max_length=4096)
    )


@attrs.define(kw_only=True)
class GPUNodePoolStatus:
    observed_generation: int | None = attrs.field(
        default=None, metadata=doc("The .metadata.generation this status reflects.", minimum=0)
    )
    machines: int = attrs.field(
        default=0,
        metadata=doc("Machines of the pool (GPUNodeRequests not Failed).", minimum=0),
    )
    launching: int = attrs.field(
        default=0, metadata=doc("Of those, machines whose Node is not Ready yet.", minimum=0)
    )
    gpus: int = attrs.field(default=0, metadata=doc("GPUs of the pool's machines.", minimum=0))
    gpus_in_use: int = attrs.field(
        default=0,
        metadata=doc("GPUs requested by pods running on the pool's Nodes.", minimum=0),
    )
    price_per_hour: Decimal = attrs.field(
        default=Decimal(0),
        metadata=doc(
            "USD per hour of the pool's machines now (a launching machine at its price "
            "cap), as a decimal string.",
            max_length=32,
            preserve_default=False,
        ),
    )
    conditions: list[Condition] = attrs.field(
        factory=list,
        metadata=doc(
            "Conditions: Ready (the pool can launch), LimitReached (a limit stops launches).",
            max_items=MAX_CONDITIONS,
            list_type="map",
            list_map_keys=["type"],
        ),
    )
    last_scale_decision: ScaleDecision | None = attrs.field(
        default=None, metadata=doc("The most recent provisioning or disruption decision.")
    )


@attrs.define(kw_only=True)
class GPUNodePool(Resource):
    """GPUNodePool rents GPU machines for pending GPU pods, within limits, and removes idle ones.

    Pods the kube-scheduler cannot place that request nvidia.com/gpu (or amd.com/gpu,
    served only by machines of that vendor) make the pool create GPUNodeRequests
    (owned by the pool) for the cheapest machines that fit them, bin-packed, within
    the pool's requirements and limits; disruption removes empty or underutilized
    machines and recycles expired ones.
    """

    KIND = GNP_KIND
    PLURAL = GNP_PLURAL

    metadata: ObjectMeta = attrs.field(metadata=doc("Standard object metadata."))
    spec: GPUNodePoolSpec = attrs.field(
        metadata=doc("The machines the pool may rent, its limits, and its disruption rules.")
    )
    status: GPUNodePoolStatus = attrs.field(
        factory=GPUNodePoolStatus,
        metadata=doc("The pool's machines, GPUs and cost now; written by gpuctl."),
    )
