"""A disruption decision: which machine, why, what replaces it, what it saves."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from gpuctl.controllers.pool.disruption.machines import Machine

EMPTY = "Empty"
UNDERUTILIZED = "Underutilized"
EXPIRED = "Expired"


@attrs.frozen
class Replacement:
    """A machine to launch first: the GPUNodeRequest spec and its price per hour."""

    spec: dict[str, Any]
    price: Decimal
    description: str  # e.g. "1x A10 on lambda-x (on-demand) at $0.75/h"


@attrs.frozen
class Command:
    reason: str
    machine: Machine
    replacements: tuple[Replacement, ...] = ()

    @property
    def savings(self) -> Decimal:
        """USD per hour saved once done (negative when a replacement costs more)."""
        return self.machine.price - sum((r.price for r in self.replacements), Decimal(0))

    def describe(self) -> str:
        price = f"${self.machine.price}/h"
        if not self.replacements:
            action = f"removing {self.machine.name} ({price})"
        else:
            what = ", ".join(r.description for r in self.replacements)
            action = f"replacing {self.machine.name} ({price}) with {what}"
        return f"{self.reason}: {action}; saves ${self.savings}/h"
