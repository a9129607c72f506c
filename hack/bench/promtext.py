"""One scrape of the operator's /metrics, and how counters grew between two scrapes.

Parsed with prometheus_client's own text parser. Counter samples keep their `_total`
name; histogram samples are `<name>_sum`, `<name>_count` and `<name>_bucket`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs
from prometheus_client.parser import text_string_to_metric_families


@attrs.frozen
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@attrs.frozen
class Metrics:
    """One scrape of /metrics, as samples (counter samples keep their `_total` name)."""

    samples: tuple[Sample, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(
            tuple(
                Sample(s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            )
        )

    def total(self, metric: str, /, **labels: str) -> float:
        """Sum of the samples called `metric` whose labels include `labels`."""
        return sum(s.value for s in self._matching(metric, labels))

    def by(self, metric: str, /, *keys: str, **labels: str) -> dict[str, float]:
        """Sum of the samples called `metric` per value of the `keys` labels (space-joined)."""
        sums: dict[str, float] = {}
        for s in self._matching(metric, labels):
            key = " ".join(s.labels.get(k, "") for k in keys)
            sums[key] = sums.get(key, 0.0) + s.value
        return sums

    def _matching(self, metric: str, labels: Mapping[str, str]) -> Iterable[Sample]:
        for s in self.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                yield s


def grown(after: Metrics, before: Metrics, metric: str, /, **labels: str) -> float:
    """How much the counter `metric` grew between two scrapes."""
    return after.total(metric, **labels) - before.total(metric, **labels)


def grown_by(
    after: Metrics, before: Metrics, metric: str, /, *keys: str, **labels: str
) -> dict[str, float]:
    """How much the counter `metric` grew per value of the `keys` labels (only non-zero)."""
    then = before.by(metric, *keys, **labels)
    changed = {k: v - then.get(k, 0.0) for k, v in after.by(metric, *keys, **labels).items()}
    return {k: v for k, v in sorted(changed.items()) if v}
