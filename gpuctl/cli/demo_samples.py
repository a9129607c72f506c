"""The sample manifests of `manifests/samples`, pointed at the local simulated clouds.

`load(directory)` reads the files `<directory>/kustomization.yaml` lists under
`resources`, in that order, and returns their objects (a file may hold several
documents). `point_at(objects, target)` returns deep copies in which:

- every GPUProvider's `spec.endpoint` is the simulated cloud of its `spec.type`,
  and `spec.bootstrap.apiServerEndpoint` is the local API server (the samples
  carry placeholders for both);
- a Paperspace `templateId` the simulator does not serve becomes the first one
  it does (the sample's id is a placeholder too);
- `spec.rateLimit.requestsPerSecond` is `target.requests_per_second` when that
  is set: the simulator answers in milliseconds and enforces no quota, while a
  real account's (Lambda 1/s, Paperspace 2/s) makes a catalog refresh take
  tens of seconds — and a refresh in flight delays the operator's graceful
  stop. Launch limits (`launchesPerMinute`) stay as written;
- every Secret a GPUProvider's `credentialsSecretRef` names holds the simulated
  cloud's API key under the referenced key (default `apiKey`), in `stringData`.

Everything else — the requests, prices, regions, rate limits — is applied as
written, so the demo shows what the samples do. `ordered(objects)` sorts them
for creation: Secrets, then GPUProviders, then GPUNodePools and GPUNodeRequests, so
no provider waits for its credentials and no request waits for its providers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

Obj = dict[str, Any]

DEFAULT_SECRET_KEY = "apiKey"  # GPUProvider spec.credentialsSecretRef.key's default
_CREATE_ORDER = ("Namespace", "Secret", "GPUProvider", "GPUNodePool", "GPUNodeRequest")


class SampleError(ValueError):
    """The samples directory is missing, unreadable, or holds something unexpected."""


@attrs.frozen
class SimTarget:
    """Where the samples must point: the simulated clouds and the local API server."""

    endpoints: Mapping[str, str]  # cloud type -> base URL
    api_keys: Mapping[str, str]  # cloud type -> the one key the cloud accepts
    api_server: str  # https://127.0.0.1:PORT
    paperspace_templates: Sequence[str] = ()  # template ids the simulator serves
    requests_per_second: float | None = None  # None: keep each provider's rate limit


def load(directory: Path) -> list[Obj]:
    """The objects of the files `directory/kustomization.yaml` lists, in order."""
    kustomization = directory / "kustomization.yaml"
    try:
        listed = yaml.safe_load(kustomization.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SampleError(f"cannot read {kustomization}: {error}") from error
    objects: list[Obj] = []
    for name in listed.get("resources") or []:
        objects.extend(_documents(directory / name))
    return objects


def _documents(path: Path) -> list[Obj]:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as error:
        raise SampleError(f"cannot read {path}: {error}") from error
    found = [d for d in documents if d]
    for document in found:
        if not isinstance(document, dict) or "kind" not in document:
            raise SampleError(f"{path}: not a Kubernetes object")
    return found


def of_kind(objects: Sequence[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def ordered(objects: Sequence[Obj]) -> list[Obj]:
    """Creation order: Namespaces, Secrets, GPUProviders, GPUNodePools, GPUNodeRequests, rest."""

    def rank(obj: Obj) -> int:
        kind = obj.get("kind")
        return _CREATE_ORDER.index(kind) if kind in _CREATE_ORDER else len(_CREATE_ORDER)

    return sorted(objects, key=rank)  # stable: file order within a kind


def point_at(objects: Sequence[Obj], target: SimTarget) -> list[Obj]:
    """Deep copies of `objects` with endpoints, API keys and templates of `target`."""
    copies = [copy.deepcopy(o) for o in objects]
    secrets = {_secret_key(o): o for o in of_kind(copies, "Secret")}
    for provider in of_kind(copies, "GPUProvider"):
        cloud = _cloud(provider)
        spec = provider["spec"]
        spec["endpoint"] = target.endpoints[cloud]
        spec.setdefault("bootstrap", {})["apiServerEndpoint"] = target.api_server
        if cloud == "paperspace":
            _fix_template(spec, target.paperspace_templates)
        if target.requests_per_second is not None:
            spec.setdefault("rateLimit", {})["requestsPerSecond"] = target.requests_per_second
        ref = spec.get("credentialsSecretRef") or {}
        secret = secrets.get((ref.get("namespace"), ref.get("name")))
        if secret is not None:
            _set_key(secret, ref.get("key") or DEFAULT_SECRET_KEY, target.api_keys[cloud])
    return copies


def _cloud(provider: Obj) -> str:
    cloud = (provider.get("spec") or {}).get("type")
    if not isinstance(cloud, str):
        name = provider.get("metadata", {}).get("name")
        raise SampleError(f"GPUProvider {name}: no spec.type")
    return cloud


def _secret_key(secret: Obj) -> tuple[str | None, str | None]:
    meta = secret.get("metadata") or {}
    return meta.get("namespace"), meta.get("name")


def _set_key(secret: Obj, key: str, value: str) -> None:
    secret.setdefault("stringData", {})[key] = value
    (secret.get("data") or {}).pop(key, None)  # stringData would win anyway; avoid confusion


def _fix_template(spec: Obj, known: Sequence[str]) -> None:
    block = spec.setdefault("paperspace", {})
    if known and block.get("templateId") not in known:
        block["templateId"] = known[0]
