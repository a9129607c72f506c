"""`DigitalOceanDriver`: DigitalOcean GPU Droplets behind `gpuctl.providers.base.Driver`.

API: https://api.digitalocean.com (`DriverConfig.endpoint` replaces it), a personal
access token as bearer token, through the generated operations in `_generated/`.
The token needs the scopes droplet:create/read/delete, sizes:read, regions:read,
ssh_key:read, account:read and firewall:create/read.

- Offers: `GET /v2/sizes` (paged, 200 a page). A size with `gpu_info` is a GPU Droplet
  size: one on-demand offer per region in its `regions`, `gpu_info.count` GPUs of
  `gpu_info.model`, price `price_hourly` (USD per Droplet-hour) unless
  `DriverConfig.prices[<slug>]` overrides it; available when the size says
  `available`. DigitalOcean has no stock or capacity endpoint: a create that cannot be
  placed fails (422). No spot.
- Launch: `POST /v2/droplets` (the single-Droplet form) with `name`, `region`, `size`,
  `image` (`options["image"]`; default DigitalOcean's AI/ML-ready GPU image
  `gpu-h100x1-base`, NVIDIA drivers and CUDA installed), `ssh_keys`
  (`options["sshKeys"]`, comma-separated ids or fingerprints, else the account's first
  key by name: without a key DigitalOcean e-mails a root password), `user_data` = the
  join script (cloud-init), `tags`: the ownership tag `gpuctl-<provider>` and the
  request's tags as `key:value` (characters DigitalOcean refuses become "-"), and
  `monitoring: false`. Idempotent by name; `create` sends exactly one create.
- Firewall: before the first launch the driver makes sure a Cloud Firewall named
  `gpuctl-<provider>` exists (`GET`/`POST /v2/firewalls`), applied to the ownership tag:
  inbound TCP 10250 (the kubelet's API, for the API server's logs, exec and
  port-forward) from `options["kubeletSourceCIDR"]` (default 0.0.0.0/0 and ::/0: the
  kubelet authenticates every caller) and TCP 22 from `options["sshSourceCIDR"]` when
  set; outbound everything (a firewall without outbound rules blocks all egress, and
  the node must reach the API server). `options["firewall"] = "false"` skips it.
- Look-ups: `GET /v2/droplets?type=gpus` — GPU Droplets are listed ONLY with
  `type=gpus` — with `name=` for one name (DigitalOcean matches names exactly, case
  aside), paged 200 at a time.
- Terminate: `DELETE /v2/droplets/{id}` (204), once per poll; unknown: gone. The
  firewall serves every Droplet of the provider and stays.

States: new -> PENDING, active -> RUNNING, off and archive -> STOPPED (both still
exist; archive is a Droplet DigitalOcean took offline), anything else -> UNKNOWN.
A deleted Droplet is not found (404).
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Mapping
from typing import TypeVar

import aiohttp

from gpuctl.providers import errors
from gpuctl.providers.base import (
    Capabilities,
    CapacityType,
    DriverConfig,
    DriverIdentity,
    Instance,
    InstanceState,
    InvalidRequestError,
    JoinMethod,
    LaunchRequest,
    NotFoundError,
    Offer,
)
from gpuctl.providers.digitalocean._generated import models, operations
from gpuctl.providers.http import HttpTransport, retry_policy_for
from gpuctl.providers.pricing import PriceCache, Translator, filter_offers, usd
from gpuctl.providers.ratelimit import AccountLimiter, limits_for

errors.make_strict(models.converter)  # see errors.make_strict

CLOUD = "digitalocean"
DEFAULT_ENDPOINT = "https://api.digitalocean.com"
CREATE = "droplets_create"
CAPABILITIES = Capabilities(
    spot=False,
    join_method=JoinMethod.USER_DATA,
    # Droplets are billed per second since 2026-01-01 (minimum 60 s or $0.01,
    # DigitalOcean's Droplet pricing page).
    billing_granularity_seconds=1,
    max_join_data_bytes=64 * 1024,  # user_data "limited to 64 KiB"
)
MAX_NAME = 255
MAX_PAGES = 100  # 100 pages of 100 or 200: far beyond any account
PAGE = 200  # the API's maximum per_page
DEFAULT_IMAGE = "gpu-h100x1-base"
KUBELET_PORT = "10250"
ANYWHERE = ["0.0.0.0/0", "::/0"]

STATES: dict[str, InstanceState] = {
    "new": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "off": InstanceState.STOPPED,
    "archive": InstanceState.STOPPED,
}

_NAME = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
_TAG_BAD = re.compile(r"[^A-Za-z0-9_:\-]")
_FIREWALL_BAD = re.compile(r"[^a-zA-Z0-9.\-]")
T = TypeVar("T")


class DigitalOceanDriver(DriverIdentity):
    CLOUD = CLOUD
    CAPABILITIES = CAPABILITIES

    def __init__(
        self,
        config: DriverConfig,
        session: aiohttp.ClientSession,
        limiter: AccountLimiter | None = None,
    ) -> None:
        self._config = config
        self._limiter = limiter or AccountLimiter(limits_for(config))
        self._transport = HttpTransport(
            session=session,
            cloud=CLOUD,
            provider=config.name,
            base_url=(config.endpoint or DEFAULT_ENDPOINT).rstrip("/"),
            api_key=config.api_key,
            error_mapper=errors.digitalocean_error,
            limiter=self._limiter,
            retry=retry_policy_for(config),
            launch_operations={CREATE},
        )
        self._endpoint = self._transport.base_url
        options = config.options
        self._image = options.get("image", DEFAULT_IMAGE)
        self._ssh_keys = [k.strip() for k in options.get("sshKeys", "").split(",") if k.strip()]
        self._firewall_on = options.get("firewall", "true").lower() != "false"
        kubelet = options.get("kubeletSourceCIDR")
        self._kubelet_sources = [kubelet] if kubelet else ANYWHERE
        self._ssh_source = options.get("sshSourceCIDR")
        self.owner_tag = _tag(f"gpuctl-{config.name}")
        self.firewall_name = _FIREWALL_BAD.sub("-", f"gpuctl-{config.name}")[:255]
        self._firewall_ready = False
        self._firewall_lock = asyncio.Lock()
        self._offers: PriceCache[list[Offer]] = PriceCache(config.name)
        self._account_keys: PriceCache[int] = PriceCache(config.name, count_metrics=False)
        self._names = Translator(CLOUD, config.regions)
        self._terminations = errors.TerminateLog()

    # -- offers --------------------------------------------------------------------

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        offers = await self._offers.get(CapacityType.ON_DEMAND, self._fetch_offers)
        return filter_offers(offers, gpu_type, gpu_count)

    async def _fetch_offers(self) -> list[Offer]:
        offers: list[Offer] = []
        page = 1
        while True:
            answer = await self._transport.call(operations.sizes_list, per_page=PAGE, page=page)
            with errors.structure_guard(CLOUD, "sizes_list", self.name):
                offers += [o for size in answer.sizes for o in self._offers_of(size)]
                more = _has_next(answer.links)
            if not more:
                return offers
            page = _next_page(page, self.name)

    def _offers_of(self, size: models.Size) -> list[Offer]:
        info = size.gpu_info
        if info is None or not info.model or not info.count:
            return []  # not a GPU Droplet size
        gpu = self._names.gpu(info.model)
        price = self._config.prices.get(size.slug)
        if price is None:
            price = usd(size.price_hourly)
        if gpu is None or price is None:
            return []
        return [
            Offer(
                provider=self.name,
                cloud=CLOUD,
                region=region,
                native_region=native,
                gpu_type=gpu,
                gpu_count=info.count,
                instance_type=size.slug,
                capacity_type=CapacityType.ON_DEMAND,
                price_per_hour=price,
                available=size.available,
            )
            for native in sorted(size.regions)
            if (region := self._names.region(native)) is not None
        ]

    # -- instances -------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> None:
        if len(request.name) > MAX_NAME or not _NAME.match(request.name):
            raise InvalidRequestError(
                f"digitalocean: not a valid Droplet name: {request.name!r}", provider=self.name
            )
        if request.offer.capacity_type is not CapacityType.ON_DEMAND:
            raise InvalidRequestError("digitalocean: no spot Droplets", provider=self.name)
        size = len(request.join.script.encode())
        if size > CAPABILITIES.max_join_data_bytes:
            raise InvalidRequestError(
                f"digitalocean: user data of {size} bytes exceeds 64 KiB", provider=self.name
            )

    async def launch(self, request: LaunchRequest) -> Instance:
        self._check(request)
        return await errors.launch_or_recover(
            request.name, self.find_all, lambda: self.create(request)
        )

    async def create(self, request: LaunchRequest) -> Instance:
        self._check(request)
        offer = request.offer
        await self._ensure_firewall()
        body = models.DropletsCreateRequest(
            name=request.name,
            region=offer.native_region,
            size=offer.instance_type,
            image=self._image,
            ssh_keys=await self._keys(),
            user_data=request.join.script or None,
            tags=[self.owner_tag, *_tags(request.tags)],
            monitoring=False,
        )
        answer = await errors.create_once(self._transport.call(operations.droplets_create, body))
        with errors.create_guard(CLOUD, CREATE, self.name):
            return _instance(_need(answer.droplet))

    async def _keys(self) -> list[str | int]:
        if self._ssh_keys:
            return list(self._ssh_keys)
        return [await self._account_keys.get("first", self._first_key)]

    async def _first_key(self) -> int:
        """The id of the account's first SSH key by name (cached with the offers, 5 min)."""
        answer = await self._transport.call(operations.ssh_keys_list, per_page=PAGE)
        with errors.structure_guard(CLOUD, "sshKeys_list", self.name):
            keys = sorted(answer.ssh_keys or [], key=lambda k: k.name)
            first = keys[0].id if keys and keys[0].id is not None else None
        if first is None:
            raise InvalidRequestError(
                "digitalocean: the account has no SSH key (without one DigitalOcean e-mails "
                "a root password); add one or set sshKeys",
                provider=self.name,
            )
        return first

    async def _ensure_firewall(self) -> None:
        """The provider's Cloud Firewall exists (applied to its ownership tag)."""
        if not self._firewall_on or self._firewall_ready:
            return
        async with self._firewall_lock:
            if self._firewall_ready:
                return
            if not await self._firewall_exists():
                await self._transport.call(operations.firewalls_create, self._firewall())
            self._firewall_ready = True

    async def _firewall_exists(self) -> bool:
        page = 1
        while True:
            answer = await self._transport.call(operations.firewalls_list, per_page=PAGE, page=page)
            with errors.structure_guard(CLOUD, "firewalls_list", self.name):
                if any(f.name == self.firewall_name for f in answer.firewalls or []):
                    return True
                more = _has_next(answer.links)
            if not more:
                return False
            page = _next_page(page, self.name)

    def _firewall(self) -> models.FirewallsCreateRequest:
        inbound = [
            models.FirewallInboundRulesItem(
                protocol="tcp",
                ports=KUBELET_PORT,
                sources=models.FirewallRuleTarget(addresses=list(self._kubelet_sources)),
            )
        ]
        if self._ssh_source:
            inbound.append(
                models.FirewallInboundRulesItem(
                    protocol="tcp",
                    ports="22",
                    sources=models.FirewallRuleTarget(addresses=[self._ssh_source]),
                )
            )
        everywhere = models.FirewallRuleTarget(addresses=list(ANYWHERE))
        outbound = [
            models.FirewallOutboundRulesItem(protocol=p, ports="all", destinations=everywhere)
            for p in ("tcp", "udp")
        ]
        outbound.append(
            models.FirewallOutboundRulesItem(protocol="icmp", ports="0", destinations=everywhere)
        )
        return models.FirewallsCreateRequest(
            name=self.firewall_name,
            tags=[self.owner_tag],
            inbound_rules=inbound,
            outbound_rules=outbound,
        )

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        # Every look asks the cloud: an answer to a call of its own is fresher than `since`.
        if not instance_id.isdigit():
            raise NotFoundError(f"digitalocean: no Droplet {instance_id!r}", provider=self.name)
        answer = await self._transport.call(operations.droplets_get, int(instance_id))
        with errors.structure_guard(CLOUD, "droplets_get", self.name):
            return _instance(_need(answer.droplet))

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        found = await self._list(name=name)
        return errors.preferred(i for i in found if i.name == name)

    async def find(self, name: str) -> Instance | None:
        found = await self.find_all(name)
        return found[0] if found else None

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        return [i for i in await self._list() if i.name.startswith(name_prefix)]

    async def _list(self, name: str | None = None) -> list[Instance]:
        found: list[Instance] = []
        page = 1
        while True:
            answer = await self._transport.call(
                operations.droplets_list, per_page=PAGE, page=page, name=name, type="gpus"
            )
            with errors.structure_guard(CLOUD, "droplets_list", self.name):
                found += [_instance(d) for d in answer.droplets or []]
                more = _has_next(answer.links)
            if not more:
                return [i for i in found if i.state is not InstanceState.TERMINATED]
            page = _next_page(page, self.name)

    async def terminate(self, instance_id: str) -> None:
        if not instance_id.isdigit() or not self._terminations.due(instance_id):
            return
        try:
            await self._transport.call(operations.droplets_destroy, int(instance_id))
        except NotFoundError:
            self._terminations.gone(instance_id)
            return
        self._terminations.accepted(instance_id)

    async def cleanup(self, name: str) -> None:
        """Nothing per machine: the firewall serves every Droplet of the provider."""

    async def validate_credentials(self) -> None:
        await self._transport.call(operations.account_get)

    async def close(self) -> None:
        """Nothing to release: the aiohttp session belongs to the caller."""


def _need(value: T | None) -> T:
    if value is None:
        raise ValueError("a required field is missing")
    return value


def _instance(droplet: models.Droplet) -> Instance:
    v4 = droplet.networks.v4 or []
    public = [n.ip_address for n in v4 if n.type == "public" and n.ip_address]
    private = [n.ip_address for n in v4 if n.type == "private" and n.ip_address]
    return Instance(
        id=str(droplet.id),
        name=droplet.name,
        state=STATES.get(droplet.status, InstanceState.UNKNOWN),
        native_state=droplet.status,
        region=droplet.region.slug,
        instance_type=droplet.size_slug,
        capacity_type=CapacityType.ON_DEMAND,
        public_ip=public[0] if public else None,
        private_ip=private[0] if private else None,
        price_per_hour=usd(droplet.size.price_hourly),
        launched_at=_timestamp(droplet.created_at),
    )


def _has_next(links: models.PageLinks | None) -> bool:
    pages = links.pages if links is not None else None
    return isinstance(pages, dict) and bool(pages.get("next"))


def _tag(text: str) -> str:
    return _TAG_BAD.sub("-", text)[:255]


def _tags(tags: Mapping[str, str]) -> list[str]:
    """Request tags as DigitalOcean tags: `key:value`, letters, digits, `_`, `-`, `:`."""
    return [_tag(f"{key}:{value}") for key, value in sorted(tags.items())]


def _timestamp(text: str) -> datetime.datetime | None:
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _next_page(page: int, provider: str) -> int:
    """The page after `page`; a listing longer than `MAX_PAGES` is a cloud that keeps
    saying "more": malformed, rather than a loop without end."""
    if page >= MAX_PAGES:
        raise errors.malformed(CLOUD, f"listing past page {MAX_PAGES}", provider)
    return page + 1
