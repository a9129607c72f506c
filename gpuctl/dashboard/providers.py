"""The Providers page: each GPUProvider's conditions, rate limits and recent errors.

- conditions, offer count and last price refresh: the GPUProvider's status, as
  `kubectl get gpr -o yaml` shows it;
- rate limits: the configured `spec.rateLimit`, and from the metrics the API calls
  by HTTP code, how many of them the cloud answered 429 (throttled) and the typed
  errors raised by the driver (`gpuctl_provider_api_calls_total`,
  `gpuctl_provider_api_errors_total`; the same samples `/metrics` serves);
- recent errors: Warning Events about the provider and the failed offers of
  requests on it (`status.failedOffers`), newest first.
Never a credential: the Secret is named by reference only, its value is never read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Metric

from gpuctl.dashboard.fleet import event_json, event_time
from gpuctl.dashboard.fmt import parse_time, timestamp

JSON = dict[str, Any]
RECENT_ERRORS = 10


def _counts(metrics: Iterable[Metric], name: str, label: str) -> dict[str, dict[str, float]]:
    """provider -> label value -> summed counter value, of one metric family."""
    found: dict[str, dict[str, float]] = {}
    for family in metrics:
        if family.name != name.removesuffix("_total"):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # _created
            per = found.setdefault(sample.labels.get("provider", ""), {})
            key = sample.labels.get(label, "")
            per[key] = per.get(key, 0.0) + sample.value
    return found


def _failed_offers(requests: Iterable[JSON], provider: str) -> list[JSON]:
    found = []
    for obj in requests:
        for failed in (obj.get("status") or {}).get("failedOffers") or []:
            if failed.get("provider") == provider:
                found.append(
                    {
                        "time": timestamp(parse_time(failed.get("at"))),
                        "source": f"GPUNodeRequest {obj['metadata']['name']}",
                        "type": "Warning",
                        "reason": str(failed.get("reason") or ""),
                        "message": str(failed.get("message") or ""),
                        "count": 1,
                    }
                )
    return found


def view(
    providers: Iterable[JSON],
    requests: Iterable[JSON],
    events: Mapping[str, list[JSON]],
    metrics: Iterable[Metric],
) -> list[JSON]:
    metrics = list(metrics)
    requests = list(requests)
    calls = _counts(metrics, "gpuctl_provider_api_calls_total", "code")
    errors = _counts(metrics, "gpuctl_provider_api_errors_total", "error")
    rows = []
    for obj in sorted(providers, key=lambda o: str(o["metadata"]["name"])):
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        name = str(meta["name"])
        limit = spec.get("rateLimit") or {}
        by_code = calls.get(name, {})
        warnings = [
            {**event_json(e), "source": "event"}
            for e in events.get(f"GPUProvider/{name}", []) + events.get(str(meta.get("uid")), [])
            if e.get("type") == "Warning" and event_time(e) is not None
        ]
        unique = {(w["time"], w["reason"], w["message"]): w for w in warnings}
        recent = sorted(
            [*unique.values(), *_failed_offers(requests, name)],
            key=lambda item: item["time"] or "",
            reverse=True,
        )[:RECENT_ERRORS]
        rows.append(
            {
                "name": name,
                "type": str(spec.get("type") or ""),
                "regions": [str(r) for r in spec.get("regions") or []],
                "conditions": [
                    {
                        "type": str(c.get("type") or ""),
                        "status": str(c.get("status") or ""),
                        "reason": str(c.get("reason") or ""),
                        "message": str(c.get("message") or ""),
                        "lastTransitionTime": timestamp(parse_time(c.get("lastTransitionTime"))),
                    }
                    for c in status.get("conditions") or []
                ],
                "offerCount": status.get("offerCount"),
                "lastPriceRefresh": timestamp(parse_time(status.get("lastPriceRefresh"))),
                "message": str(status.get("message") or ""),
                "rateLimit": {
                    "requestsPerSecond": limit.get("requestsPerSecond"),
                    "launchesPerMinute": limit.get("launchesPerMinute"),
                },
                "apiCalls": int(sum(by_code.values())),
                "throttled": int(by_code.get("429", 0)),
                "callsByCode": {k: int(v) for k, v in sorted(by_code.items())},
                "errorsByType": {k: int(v) for k, v in sorted(errors.get(name, {}).items())},
                "recentErrors": recent,
            }
        )
    return rows
