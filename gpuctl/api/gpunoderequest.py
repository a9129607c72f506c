"""GPUNodeRequest (gpuctl.io/v1alpha1, cluster-scoped, short name `gnr`): one GPU node wanted.

The spec says what to rent (GPU type and count, capacity type, price cap, allowed
providers and regions, how to choose among offers) and how the node should look
(labels, taints, lifetime); the status says what was rented and where it stands.

Validation split: the API server enforces the shape, bounds and cross-field rules
(CEL; `spec.gpu` and `spec.capacityType` are immutable). The GPU type is only
checked for form (`H100-80GB`-like), not against the catalog: the catalog lives
with the drivers (gpuctl/providers/tables/gpus.yaml) and grows without a CRD
upgrade, so the controller marks a request for an unknown GPU type Failed
(reason `UnknownGPUType`) instead.
"""

from __future__ import annotations

import datetime
import enum
from decimal import Decimal

import attrs

from gpuctl.api.constants import GNR_KIND, GNR_PLURAL, RESERVED_LABEL_PREFIX, Region
from gpuctl.api.meta import (
    DNS_SUBDOMAIN_PATTERN,
    LABEL_VALUE_PATTERN,
    MAX_CONDITIONS,
    QUALIFIED_NAME_PATTERN,
    Condition,
    ObjectMeta,
)
from gpuctl.api.resource import Resource
from gpuctl.api.schema import IMMUTABLE, FieldDoc, Rule, cel_string, doc, item
from gpuctl.api.units import DURATION_PATTERN, PRICE_PATTERN, parse_duration

GPU_TYPE_PATTERN = r"^[A-Z0-9]+(-[A-Z0-9]+)*$"
MAX_GPU_COUNT = 16
MAX_FAILED_OFFERS = 10  # status.failedOffers keeps the most recent ones

# Guarded by the pattern so a malformed value reports only the pattern error, not
# also a CEL type-conversion error.
_POSITIVE_DURATION = Rule(
    f"!self.matches({cel_string(DURATION_PATTERN)}) || duration(self) > duration('0s')",
    "must be a positive duration",
)
_POSITIVE_PRICE = Rule(
    f"!self.matches({cel_string(PRICE_PATTERN)}) || double(self) > 0.0",
    "must be greater than 0",
)


def duration_doc(description: str) -> dict[str, FieldDoc]:
    """Metadata of a Go-duration string field that must be positive."""
    return doc(description, pattern=DURATION_PATTERN, max_length=64, rules=[_POSITIVE_DURATION])


class CapacityType(enum.StrEnum):
    """In the spec: what may be rented. In status.offer: what was rented (no spot-or-on-demand)."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    SPOT_OR_ON_DEMAND = "spot-or-on-demand"


class Placement(enum.StrEnum):
    CHEAPEST = "cheapest"  # the cheapest fitting offer of any allowed provider
    ORDERED = "ordered"  # the first provider in spec.providers with a fitting offer


class Phase(enum.StrEnum):
    """Where a request stands; conditions carry the details."""

    PENDING = "Pending"  # looking for an offer
    PROVISIONING = "Provisioning"  # launched; the cloud is booting the machine
    JOINING = "Joining"  # the machine is up; waiting for its Node to register and be Ready
    READY = "Ready"  # the Node is Ready
    INTERRUPTED = "Interrupted"  # the spot machine was reclaimed; a replacement follows
    TERMINATING = "Terminating"  # deleting: the machine is being torn down
    FAILED = "Failed"  # gave up (unknown GPU type, no provider, ...); see message


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


# -- spec ------------------------------------------------------------------------


@attrs.define(kw_only=True)
class GPUSpec:
    type: str = attrs.field(
        metadata=doc(
            "Normalised GPU model, e.g. H100-80GB, A100-80GB, RTX-4090 (see docs/api.md). "
            "A type that no provider knows marks the request Failed (reason UnknownGPUType).",
            pattern=GPU_TYPE_PATTERN,
            max_length=32,
        )
    )
    count: int = attrs.field(
        metadata=doc(
            "Number of GPUs in the one machine, 1 to 16.", minimum=1, maximum=MAX_GPU_COUNT
        )
    )


@attrs.define(kw_only=True)
class Taint:
    key: str = attrs.field(
        metadata=doc(
            "Taint key: a qualified name, e.g. nvidia.com/gpu.",
            pattern=QUALIFIED_NAME_PATTERN,
            max_length=316,
        )
    )
    value: str | None = attrs.field(
        default=None,
        metadata=doc("Taint value (optional).", pattern=LABEL_VALUE_PATTERN, max_length=63),
    )
    effect: TaintEffect = attrs.field(
        metadata=doc("Effect on pods that do not tolerate the taint.")
    )


_LABEL_KEYS_VALID = Rule(
    f"self.all(k, size(k) <= 316 && k.matches({cel_string(QUALIFIED_NAME_PATTERN)}))",
    "label keys must be qualified names: an optional DNS subdomain prefix and '/', "
    "then up to 63 characters [A-Za-z0-9_.-] starting and ending alphanumeric",
)
_LABEL_KEYS_NOT_RESERVED = Rule(
    r"self.all(k, !k.matches('^([^/]*\\.)?gpuctl\\.io/'))",
    f"label keys with the prefix {RESERVED_LABEL_PREFIX} are reserved for gpuctl",
)


@attrs.define(kw_only=True)
class NodeTemplate:
    labels: dict[str, str] = attrs.field(
        factory=dict,
        metadata=doc(
            "Labels to put on the Node, in addition to gpuctl's own gpuctl.io/* labels "
            "(that prefix is reserved).",
            max_properties=64,
            items=item(pattern=LABEL_VALUE_PATTERN, max_length=63),
            rules=[_LABEL_KEYS_VALID, _LABEL_KEYS_NOT_RESERVED],
        ),
    )
    taints: list[Taint] = attrs.field(
        factory=list,
        metadata=doc("Taints to put on the Node when it registers.", max_items=32),
    )


@attrs.define(kw_only=True)
class Lifetime:
    max_lifetime: str | None = attrs.field(
        default=None,
        metadata=duration_doc(
            "Longest time the machine may live, counted from launch, as a Go duration "
            "(e.g. 8h, 90m); then gpuctl tears it down. Unset: no limit."
        ),
    )

    def max_lifetime_delta(self) -> datetime.timedelta | None:
        return parse_duration(self.max_lifetime) if self.max_lifetime else None


@attrs.define(kw_only=True)
class GPUNodeRequestSpec:
    __validations__ = (
        Rule(
            "self.placement != 'ordered' || (has(self.providers) && size(self.providers) > 0)",
            "placement 'ordered' requires spec.providers",
            field_path=".providers",
            reason="FieldValueRequired",
        ),
    )

    gpu: GPUSpec = attrs.field(
        metadata=doc(
            "GPUs wanted in one machine. Immutable: create a new request for other GPUs.",
            rules=[IMMUTABLE],
        )
    )
    capacity_type: CapacityType = attrs.field(
        default=CapacityType.ON_DEMAND,
        metadata=doc(
            "on-demand (default), spot (interruptible, usually cheaper), or "
            "spot-or-on-demand (whichever fitting offer is cheapest). Immutable.",
            rules=[IMMUTABLE],
        ),
    )
    max_price_per_hour: Decimal | None = attrs.field(
        default=None,
        metadata=doc(
            "Highest acceptable price in USD per instance-hour, as a decimal string "
            '(e.g. "25", "2.49"); must be greater than 0. Unset: no cap.',
            pattern=PRICE_PATTERN,
            max_length=16,
            rules=[_POSITIVE_PRICE],
        ),
    )
    providers: list[str] = attrs.field(
        factory=list,
        metadata=doc(
            "Names of GPUProviders that may be used, in order of preference for "
            "placement 'ordered'. Unset or empty: every GPUProvider.",
            max_items=16,
            list_type="set",
            items=item(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253),
        ),
    )
    regions: list[Region] = attrs.field(
        factory=list,
        metadata=doc(
            "Normalised regions the machine may be in, from: "
            + ", ".join(Region)
            + ". Unset or empty: any region.",
            max_items=len(Region),
            list_type="set",
        ),
    )
    placement: Placement = attrs.field(
        default=Placement.CHEAPEST,
        metadata=doc(
            "How to choose among fitting offers: cheapest (default) across all allowed "
            "providers, or ordered (the first provider in spec.providers that has one; "
            "requires spec.providers)."
        ),
    )
    node: NodeTemplate | None = attrs.field(
        default=None, metadata=doc("Labels and taints for the Node the machine becomes.")
    )
    lifetime: Lifetime | None = attrs.field(
        default=None, metadata=doc("Limits on how long the machine lives.")
    )
    registration_timeout: str | None = attrs.field(
        default=None,
        metadata=duration_doc(
            "How long a launched machine may take to register as a Node before gpuctl "
            "tears it down and tries the next offer, as a Go duration (e.g. 30m). "
            "Unset: the GPUProvider's registrationTimeout."
        ),
    )


# -- status ----------------------------------------------------------------------


@attrs.define(kw_only=True)
class OfferStatus:
    provider: str = attrs.field(metadata=doc("Name of the GPUProvider.", max_length=253))
    cloud: str = attrs.field(
        metadata=doc("Cloud: the GPUProvider type, e.g. lambda or crusoe.", max_length=32)
    )
    region: str = attrs.field(metadata=doc("Normalised region, e.g. us-east.", max_length=64))
    native_region: str = attrs.field(
        metadata=doc("The cloud's own region or data centre, e.g. us-east-1.", max_length=128)
    )
    instance_type: str = attrs.field(
        metadata=doc("The cloud's machine type or GPU type id.", max_length=256)
    )
    gpu_type: str = attrs.field(metadata=doc("Normalised GPU model.", max_length=32))
    gpu_count: int = attrs.field(metadata=doc("GPUs in the machine.", minimum=0))
    capacity_type: CapacityType = attrs.field(
        metadata=doc("on-demand or spot.", enum=[CapacityType.ON_DEMAND, CapacityType.SPOT])
    )
    price_per_hour: Decimal = attrs.field(
        metadata=doc("Price in USD per instance-hour, as a decimal string.", max_length=32)
    )


@attrs.define(kw_only=True)
class InstanceStatus:
    id: str = attrs.field(metadata=doc("The cloud's id of the machine.", max_length=256))
    name: str | None = attrs.field(
        default=None,
        metadata=doc(
            "The machine's deterministic name (the launch idempotency key).", max_length=256
        ),
    )
    state: str | None = attrs.field(
        default=None,
        metadata=doc(
            "Normalised state: pending, running, stopped, terminating, terminated, "
            "preempted, failed or unknown.",
            max_length=32,
        ),
    )
    public_ip: str | None = attrs.field(
        default=None, metadata=doc("Public IP address, once known.", name="publicIP", max_length=64)
    )
    launched_at: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("When the cloud accepted the launch.")
    )


@attrs.define(kw_only=True)
class CostStatus:
    accrued_usd: Decimal = attrs.field(
        metadata=doc(
            "Cost accrued so far in USD, as a decimal string.", name="accruedUSD", max_length=32
        )
    )
    since: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("When billing started (the launch).")
    )
    updated_at: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("When accruedUSD was last computed.")
    )


@attrs.define(kw_only=True)
class FailedOffer:
    provider: str = attrs.field(metadata=doc("Name of the GPUProvider.", max_length=253))
    region: str | None = attrs.field(
        default=None, metadata=doc("The cloud's own region of the offer.", max_length=128)
    )
    instance_type: str | None = attrs.field(
        default=None, metadata=doc("The cloud's machine type.", max_length=256)
    )
    capacity_type: CapacityType | None = attrs.field(
        default=None,
        metadata=doc("on-demand or spot.", enum=[CapacityType.ON_DEMAND, CapacityType.SPOT]),
    )
    reason: str = attrs.field(
        metadata=doc(
            "Why it failed, CamelCase, e.g. InsufficientCapacity, RegistrationTimeout.",
            max_length=128,
        )
    )
    message: str | None = attrs.field(
        default=None, metadata=doc("Details, e.g. the cloud's error message.", max_length=1024)
    )
    at: datetime.datetime = attrs.field(metadata=doc("When it failed."))


@attrs.define(kw_only=True)
class GPUNodeRequestStatus:
    phase: Phase | None = attrs.field(default=None, metadata=doc("Where the request stands."))
    observed_generation: int | None = attrs.field(
        default=None, metadata=doc("The .metadata.generation this status reflects.", minimum=0)
    )
    attempt: int = attrs.field(
        default=0, metadata=doc("Launches tried for this request so far.", minimum=0)
    )
    offer: OfferStatus | None = attrs.field(
        default=None, metadata=doc("The offer chosen and launched.")
    )
    instance: InstanceStatus | None = attrs.field(
        default=None, metadata=doc("The cloud machine, once launched.")
    )
    node_name: str | None = attrs.field(
        default=None, metadata=doc("Name of the Node the machine registered as.", max_length=253)
    )
    ready_at: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("When the Node first became Ready.")
    )
    cost: CostStatus | None = attrs.field(
        default=None, metadata=doc("Money spent on the current machine.")
    )
    conditions: list[Condition] = attrs.field(
        factory=list,
        metadata=doc(
            "Conditions: OfferAvailable, Launched, Registered, Ready, Interrupted.",
            max_items=MAX_CONDITIONS,
            list_type="map",
            list_map_keys=["type"],
        ),
    )
    message: str | None = attrs.field(
        default=None, metadata=doc("Human-readable summary of the state.", max_length=32768)
    )
    interruptions: int = attrs.field(
        default=0, metadata=doc("Spot interruptions suffered so far.", minimum=0)
    )
    failed_offers: list[FailedOffer] = attrs.field(
        factory=list,
        metadata=doc(
            f"The most recent offers that failed (at most {MAX_FAILED_OFFERS}), newest last; "
            "they are skipped for a while.",
            max_items=MAX_FAILED_OFFERS,
        ),
    )


@attrs.define(kw_only=True)
class GPUNodeRequest(Resource):
    """GPUNodeRequest asks gpuctl for one GPU machine from a GPU cloud, joined as a Node.

    gpuctl picks the cheapest (or first, with placement ordered) fitting offer among
    the allowed GPUProviders, launches it, waits for it to register, watches it
    (spot interruptions included), tracks its cost, and tears it down when the
    request is deleted.
    """

    KIND = GNR_KIND
    PLURAL = GNR_PLURAL

    metadata: ObjectMeta = attrs.field(metadata=doc("Standard object metadata."))
    spec: GPUNodeRequestSpec = attrs.field(
        metadata=doc(
            "The GPUs to rent, constraints on the offer (capacity type, price cap, "
            "providers, regions, placement) and the Node the machine becomes."
        )
    )
    status: GPUNodeRequestStatus = attrs.field(
        factory=GPUNodeRequestStatus,
        metadata=doc("What gpuctl rented and where the request stands; written by gpuctl."),
    )
