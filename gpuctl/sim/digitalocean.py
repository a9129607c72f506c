"""Simulated DigitalOcean API v2 (spec: "DigitalOcean API" 2.0, bundled), served under /v2.

Operations (those gpuctl uses; the shipped spec is pruned to them): GET /v2/account,
GET /v2/account/keys, GET /v2/sizes, GET/POST /v2/droplets, GET/DELETE
/v2/droplets/{droplet_id}, GET/POST /v2/firewalls. Semantics as DigitalOcean documents:
- auth: `Authorization: Bearer <token>`; anything else is 401.
- sizes: every catalogue type; GPU sizes carry `gpu_info {count, model, vram}`;
  `regions` are the regions where the size can be created now (free capacity), and
  `available` is false when there is none anywhere. `price_hourly` is the list price,
  `price_monthly` 672 hours of it (DigitalOcean's monthly cap). Paged (`per_page` up to
  200, default 20; `links.pages.next`/`last`, `meta.total`).
- create: the single-Droplet form only (`names[]` is refused with 422 here: gpuctl
  creates one at a time); the size and region must exist, the image be one of the
  catalogue's images, each `ssh_keys` entry an id or fingerprint of an account key,
  `user_data` at most 64 KiB, tags of letters, digits, `-`, `_`, `:`. No free capacity
  -> 422 "... not enough capacity ...". Answers 202 `{droplet, links: {actions}}`.
  `user_data` is cloud-init user data the Droplet runs at its first boot.
- list: GPU Droplets are listed ONLY with `type=gpus`; without `type` (or with
  `type=droplets`) only other Droplets. `name` matches exactly (case-insensitive),
  `tag_name` by tag; `type` with `tag_name` is refused (422), as the spec says they
  cannot be combined. Paged like sizes.
- status: new while booting (and for ever when its provisioning failed), active once
  running (then with a public IPv4), off when stopped. DELETE answers 204; DigitalOcean
  has no "deleting" status: the Droplet is gone at once (404, not listed), while billing
  runs `terminate_seconds` more.
- firewalls: kept as created (`status: succeeded`), listed paged.
- every authenticated answer carries `ratelimit-limit`, `ratelimit-remaining` and
  `ratelimit-reset`; a 429 (rate limit) has `ratelimit-remaining: 0` and `ratelimit-reset`
  at the end of the wait (Unix time), the header DigitalOcean documents for it.
- errors: `{id, message, request_id}`.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gpuctl.sim.clock import iso8601
from gpuctl.sim.config import SimConfig
from gpuctl.sim.model import Phase, SimInstance
from gpuctl.sim.server import ApiError, Call, CloudApi, Reply, Route
from gpuctl.sim.specs import Spec, spec
from gpuctl.sim.state import CloudState, NoCapacityError, SimState

FIREWALLS = "firewalls"
IMAGES = {"gpu-h100x1-base": 170000001, "gpu-amd-base": 170000002, "ubuntu-22-04-x64": 170000003}
PAGE_SIZE = 20
MAX_PAGE = 200
MAX_USER_DATA = 64 * 1024
HOURS_PER_MONTH = 672
FIRST_DROPLET_ID = 500_000_000
RATE_LIMIT = 5000
ACCOUNT_CREATED = 1_705_320_000.0  # 2024-01-15T12:00:00Z
_TAG = re.compile(r"^[a-zA-Z0-9_\-:]+$")


def native_state(instance: SimInstance, now: float) -> str:
    return {
        Phase.BOOTING: "new",
        Phase.RUNNING: "active",
        Phase.STOPPED: "off",
        Phase.PREEMPTED: "off",  # DigitalOcean sells no spot: only by hand
        Phase.TERMINATING: "active",  # never shown: a deleted Droplet is gone at once
        Phase.TERMINATED: "active",
    }[instance.phase]


def _error(status: int, ident: str, message: str) -> Reply:
    request_id = str(uuid.UUID(hashlib.sha256(f"{ident}{message}".encode()).hexdigest()[:32]))
    return Reply(status, {"id": ident, "message": message, "request_id": request_id})


def _unprocessable(message: str) -> Reply:
    return _error(422, "unprocessable_entity", message)


class DigitalOceanApi(CloudApi):
    cloud = "digitalocean"

    def __init__(self, state: SimState, config: SimConfig) -> None:
        super().__init__(state, config)
        self.spec = spec("digitalocean")
        self._used = 0  # requests counted for ratelimit-remaining

    def spec_for(self, path: str) -> Spec:
        return self.spec

    def routes(self) -> Sequence[Route]:
        s = self.spec
        return [
            Route("GET", s, "/v2/account", self.account),
            Route("GET", s, "/v2/account/keys", self.list_keys),
            Route("GET", s, "/v2/sizes", self.list_sizes),
            Route("POST", s, "/v2/droplets", self.create_droplet),
            Route("GET", s, "/v2/droplets", self.list_droplets),
            Route("GET", s, "/v2/droplets/{droplet_id}", self.get_droplet),
            Route("DELETE", s, "/v2/droplets/{droplet_id}", self.delete_droplet),
            Route("GET", s, "/v2/firewalls", self.list_firewalls),
            Route("POST", s, "/v2/firewalls", self.create_firewall),
        ]

    @property
    def _cloud(self) -> CloudState:
        return self.state.cloud(self.cloud)

    def admit(self) -> Reply | None:
        self._used += 1
        return None

    def headers(self) -> Mapping[str, str]:
        return {
            "ratelimit-limit": str(RATE_LIMIT),
            "ratelimit-remaining": str(max(0, RATE_LIMIT - self._used)),
            "ratelimit-reset": str(int(time.time()) + 3600),
        }

    # -- errors ---------------------------------------------------------------------

    def unauthorized(self) -> Reply:
        return _error(401, "unauthorized", "Unable to authenticate you")

    def not_found(self, message: str) -> Reply:
        return _error(404, "not_found", message)

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        return _unprocessable("; ".join(problems))

    def internal_error(self) -> Reply:
        return _error(500, "server_error", "Server was unable to give you a response.")

    def rate_limited(self, retry_after: int) -> Reply:
        reset = math.ceil(time.time() + retry_after)  # the client reads Unix time
        reply = _error(429, "too_many_requests", "API Rate limit exceeded.")
        headers = {"ratelimit-remaining": "0", "ratelimit-reset": str(reset)}
        return Reply(reply.status, reply.body, headers=headers)

    def error_model_problems(self, reply: Reply) -> list[str]:
        body = reply.body
        if not isinstance(body, dict) or not set(body) <= {"id", "message", "request_id"}:
            return ["errors must be {id, message, request_id?}"]
        return [
            f"{k} must be a string" for k in ("id", "message") if not isinstance(body.get(k), str)
        ]

    # -- account ----------------------------------------------------------------------

    def account(self, call: Call) -> Reply:
        account = {
            "droplet_limit": 25,
            "floating_ip_limit": 5,
            "email": "sim@gpuctl.invalid",
            "name": "gpuctl-sim",
            "uuid": str(uuid.UUID(int=self.config.seed + 1)),
            "email_verified": True,
            "status": "active",
            "status_message": "",
        }
        return Reply(200, {"account": account})

    def list_keys(self, call: Call) -> Reply:
        keys = [_key_json(n) for n in self._cloud.catalog.ssh_keys]
        return self._paged(call, "ssh_keys", keys, "/v2/account/keys")

    # -- sizes ------------------------------------------------------------------------

    def list_sizes(self, call: Call) -> Reply:
        sizes = [self._size_json(name) for name in self._cloud.catalog.types]
        return self._paged(call, "sizes", sizes, "/v2/sizes")

    # -- droplets -----------------------------------------------------------------------

    def create_droplet(self, call: Call) -> Reply:
        body: dict[str, Any] = call.body
        size, region = self._check_create(body)
        cloud = self._cloud
        machine = cloud.catalog.types[size]
        droplet_id = str(FIRST_DROPLET_ID + len(cloud.instances) + 1)
        try:
            instance = self.state.launch(
                self.cloud,
                instance_id=droplet_id,
                name=body["name"],
                instance_type=size,
                region=region,
                gpu_count=machine.gpu_count,
                vcpus=machine.vcpus,
                memory_gib=machine.memory_gib,
                units=1,
                spot=False,
                price_per_hour=cloud.price(size) or 0.0,
                join_script=body.get("user_data", ""),
                request=body,
            )
        except NoCapacityError:
            raise ApiError(
                _unprocessable(f"There is not enough capacity for {size} in {region} right now.")
            ) from None
        action = int(droplet_id) + 1_000_000_000
        links = {
            "actions": [
                {
                    "id": action,
                    "rel": "create",
                    "href": f"https://api.digitalocean.com/v2/actions/{action}",
                }
            ]
        }
        return Reply(202, {"droplet": self._droplet_json(instance), "links": links})

    def _check_create(self, body: dict[str, Any]) -> tuple[str, str]:
        if "names" in body or "name" not in body:
            raise ApiError(_unprocessable("the simulated cloud creates one named Droplet a time"))
        catalog = self._cloud.catalog
        size, region = str(body["size"]), str(body.get("region"))
        if size not in catalog.types:
            raise ApiError(
                _unprocessable(f"You specified an invalid size for Droplet creation: {size}")
            )
        if region not in catalog.regions:
            raise ApiError(
                _unprocessable(f"You specified an invalid region for Droplet creation: {region}")
            )
        if str(body["image"]) not in IMAGES and body["image"] not in IMAGES.values():
            raise ApiError(_unprocessable("You specified an invalid image for Droplet creation."))
        keys = [_key_json(n) for n in catalog.ssh_keys]
        known = {str(k[field]) for k in keys for field in ("id", "fingerprint")}
        if any(str(key) not in known for key in body.get("ssh_keys", [])):
            raise ApiError(_unprocessable("You specified an invalid SSH key for Droplet creation."))
        if len(body.get("user_data", "").encode()) > MAX_USER_DATA:
            raise ApiError(_unprocessable("user_data must be 64 KiB or less."))
        if any(not _TAG.match(t) for t in body.get("tags") or []):
            raise ApiError(
                _unprocessable(
                    "Tags may contain letters, numbers, colons, dashes, and underscores."
                )
            )
        return size, region

    def list_droplets(self, call: Call) -> Reply:
        kind, tag, name = call.query.get("type"), call.query.get("tag_name"), call.query.get("name")
        if kind is not None and tag is not None:
            raise ApiError(_unprocessable("type can not be combined with tag_name"))
        gpus = kind == "gpus"
        found = [
            i
            for i in self._cloud.listed(self.state.clock.now())
            if i.phase is not Phase.TERMINATING
            and (i.gpu_count > 0) == gpus
            and (name is None or i.name.lower() == name.lower())
            and (tag is None or tag in (i.request.get("tags") or []))
        ]
        droplets = [self._droplet_json(i) for i in found]
        return self._paged(call, "droplets", droplets, "/v2/droplets")

    def get_droplet(self, call: Call) -> Reply:
        return Reply(
            200, {"droplet": self._droplet_json(self._droplet(call.path_params["droplet_id"]))}
        )

    def delete_droplet(self, call: Call) -> Reply:
        self.state.terminate(self._droplet(call.path_params["droplet_id"]))
        return Reply(204, None)

    def _droplet(self, droplet_id: str) -> SimInstance:
        instance = self._cloud.instances.get(droplet_id)
        if instance is None or not instance.phase.live:
            raise ApiError(self.not_found("The resource you were accessing could not be found."))
        return instance

    # -- firewalls ----------------------------------------------------------------------

    def list_firewalls(self, call: Call) -> Reply:
        firewalls = list(self._cloud.objects.get(FIREWALLS, {}).values())
        return self._paged(call, "firewalls", firewalls, "/v2/firewalls")

    def create_firewall(self, call: Call) -> Reply:
        firewalls = self._cloud.objects.setdefault(FIREWALLS, {})
        firewall_id = str(uuid.UUID(int=len(firewalls) + 1 + (self.config.seed << 64)))
        firewall = {
            **{k: v for k, v in call.body.items() if k not in ("id", "status", "created_at")},
            "id": firewall_id,
            "status": "succeeded",
            "created_at": iso8601(self.state.clock.now()).replace(".000Z", "Z"),
            "pending_changes": [],
            "droplet_ids": call.body.get("droplet_ids") or [],
            "tags": call.body.get("tags") or [],
        }
        firewalls[firewall_id] = firewall
        return Reply(202, {"firewall": firewall})

    # -- shapes -------------------------------------------------------------------------

    def _paged(self, call: Call, key: str, items: list[Any], path: str) -> Reply:
        per_page = min(MAX_PAGE, _positive(call.query.get("per_page"), PAGE_SIZE))
        page = _positive(call.query.get("page"), 1)
        last = max(1, math.ceil(len(items) / per_page))
        pages: dict[str, str] = {}
        if page < last:
            url = f"https://api.digitalocean.com{path}?page={{}}&per_page={per_page}"
            pages = {"next": url.format(page + 1), "last": url.format(last)}
        body = {
            key: items[(page - 1) * per_page : page * per_page],
            "links": {"pages": pages},
            "meta": {"total": len(items)},
        }
        return Reply(200, body)

    def _size_json(self, name: str) -> dict[str, Any]:
        cloud = self._cloud
        machine = cloud.catalog.types[name]
        price = cloud.price(name) or 0.0
        regions = [r for r in cloud.catalog.regions if cloud.free(r, name) > 0]
        size: dict[str, Any] = {
            "slug": name,
            "description": f"{machine.gpu_count}x GPU" if machine.gpu_count else "Basic",
            "memory": machine.memory_gib * 1024,
            "vcpus": machine.vcpus,
            "disk": machine.storage_gib,
            "transfer": 15.0 if machine.gpu_count else 4.0,
            "price_hourly": price,
            "price_monthly": round(price * HOURS_PER_MONTH, 2),
            "regions": regions,
            "available": bool(regions),
            "disk_info": [
                {"type": "local", "size": {"amount": machine.storage_gib, "unit": "gib"}}
            ],
        }
        if machine.gpu_count:
            size["gpu_info"] = {
                "count": machine.gpu_count,
                "model": machine.gpu_name,
                "vram": {"amount": machine.gpu_memory_gib * machine.gpu_count, "unit": "gib"},
            }
        return size

    def _region_json(self, slug: str) -> dict[str, Any]:
        catalog = self._cloud.catalog
        return {
            "slug": slug,
            "name": catalog.regions[slug].description,
            "features": ["backups", "ipv6", "metadata", "install_agent"],
            "available": True,
            "sizes": list(catalog.types),
        }

    def _droplet_json(self, instance: SimInstance) -> dict[str, Any]:
        request = instance.request
        size = self._size_json(instance.instance_type)
        size["price_hourly"] = instance.price_per_hour  # the rate this Droplet was created at
        size["price_monthly"] = round(instance.price_per_hour * HOURS_PER_MONTH, 2)
        networks: list[dict[str, Any]] = [
            {
                "ip_address": instance.private_ip,
                "netmask": "255.255.240.0",
                "gateway": "10.0.0.1",
                "type": "private",
            }
        ]
        if instance.phase is Phase.RUNNING and instance.public_ip:
            gateway = instance.public_ip.rsplit(".", 1)[0] + ".1"
            networks.append(
                {
                    "ip_address": instance.public_ip,
                    "netmask": "255.255.255.0",
                    "gateway": gateway,
                    "type": "public",
                }
            )
        image = str(request.get("image", "gpu-h100x1-base"))
        droplet: dict[str, Any] = {
            "id": int(instance.id),
            "name": instance.name,
            "memory": instance.memory_gib * 1024,
            "vcpus": instance.vcpus,
            "disk": size["disk"],
            "locked": False,
            "status": native_state(instance, self.state.clock.now()),
            "created_at": iso8601(instance.created_at).replace(".000Z", "Z"),
            "features": ["monitoring"] if request.get("monitoring") else [],
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": [],
            "image": {
                "id": IMAGES.get(image, 0),
                "name": image,
                "distribution": "Ubuntu",
                "slug": image,
                "public": True,
                "regions": list(self._cloud.catalog.regions),
                "created_at": iso8601(ACCOUNT_CREATED).replace(".000Z", "Z"),
                "type": "base",
                "status": "available",
            },
            "volume_ids": [],
            "size": size,
            "size_slug": instance.instance_type,
            "networks": {"v4": networks, "v6": []},
            "region": self._region_json(instance.region),
            "tags": list(request.get("tags") or []),
            "vpc_uuid": str(uuid.UUID(int=hash_int(instance.region))),
            "kernel": None,
        }
        if "gpu_info" in size:
            droplet["gpu_info"] = size["gpu_info"]
        return droplet


def hash_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:32], 16)


def key_fingerprint(name: str) -> str:
    """The fingerprint of the account's SSH key `name` (tests pass it as `ssh_keys`)."""
    return str(_key_json(name)["fingerprint"])


def _key_json(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "id": int(digest[:7], 16),
        "fingerprint": ":".join(digest[i : i + 2] for i in range(0, 32, 2)),
        "name": name,
        "public_key": f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{digest} {name}",
    }


def _positive(text: str | None, default: int) -> int:
    if text is None or not text.isdigit() or int(text) < 1:
        return default
    return int(text)
