"""Operator-wide disruption settings (`gpuctl run` flags)."""

from __future__ import annotations

import datetime

import attrs


@attrs.frozen
class DisruptionSettings:
    # Seconds between passes while a disruption or a drain is under way.
    poll: float = 5.0
    # A replacement not Ready by then abandons its disruption (Karpenter: 10 minutes).
    replacement_timeout: datetime.timedelta = datetime.timedelta(minutes=10)
    # A machine whose disruption was abandoned is not tried again before this.
    retry_after: datetime.timedelta = datetime.timedelta(minutes=5)
    # After a pool machine's deletion, how long the drain waits for pods that
    # cannot be evicted (PDB, do-not-disrupt) before deleting them; None: for ever
    # (Karpenter's terminationGracePeriod, unset by default).
    drain_grace: datetime.timedelta | None = None
