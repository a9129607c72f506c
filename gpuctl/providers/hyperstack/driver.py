"""`HyperstackDriver`: Hyperstack (NexGen Cloud) GPU VMs behind `gpuctl.providers.base.Driver`.

API: https://infrahub-api.nexgencloud.com/v1 (`{endpoint}/v1`), the key in an `api_key`
header (Hyperstack's documented scheme), through the generated operations in `_generated/`.

- Offers: `GET /core/flavors` (flavors grouped by GPU and region, each with
  `stock_available`), `GET /pricebook` (hourly rates by resource name) and
  `GET /core/stocks` (stock per region and GPU model, counted per 1x/2x/4x/8x/10x
  configuration), read together and cached 5 min. A flavor's price is the pricebook
  entry named like the flavor when there is one (USD per VM-hour), else the entry named
  like its GPU times its GPU count (Hyperstack prices GPU VMs per GPU-hour, CPU, RAM
  and disk included); `DriverConfig.prices[<flavor name>]` overrides both. An offer is
  available when the flavor says `stock_available` and, where `/core/stocks` lists the
  model in the region, its count for the flavor's configuration is above zero. No spot.
- Environments: every VM lives in an environment, which is tied to one region. gpuctl
  uses one per region, `options["environmentPrefix"]` + the region in lower case
  (`gpuctl-canada-1` by default), found with `GET /core/environments` or created with
  `POST /core/environments` before the first launch there.
- SSH key: Hyperstack requires one per VM, from the VM's environment:
  `options["sshKeyName"]`, else the environment's first key pair by name; a key pair
  missing there is imported from `options["sshPublicKey"]` (`POST /core/keypairs`) under
  that name, or `gpuctl`.
- Launch: `POST /core/virtual-machines` with `name` (<= 50 characters, checked),
  `environment_name`, `flavor_name`, `key_name`, `count: 1`, `image_name`
  (`options["imageName"]`, default an Ubuntu 22.04 image with NVIDIA drivers and CUDA),
  `user_data` = the join script (cloud-init), `assign_floating_ip` (a public IP;
  `options["assignFloatingIp"]`, default true), `labels` from the request's tags, and
  `security_rules`: ingress TCP 10250 (the kubelet's API, which the API server calls for
  logs, exec and port-forward) from `options["kubeletSourceCIDR"]` (default 0.0.0.0/0:
  the kubelet authenticates every caller). Idempotent by name
  (`errors.launch_or_recover`); `create` sends exactly one create.
- Look-ups: `GET /core/virtual-machines?search=<name>` (partial match: filtered to the
  exact name here), paged 100 at a time.
- Rate limit: 500 requests/min per source IP; past it "all API calls for the next
  minute will be blocked" (429, no Retry-After): a 429 waits
  `options["rateLimitBlockSeconds"]` (default 60) before the retry.
- Terminate: `DELETE /core/virtual-machines/{id}`, once per poll; an unknown id is gone.
  Environments and key pairs are shared by every VM of a region and stay.

States (`status`, Hyperstack's "VM API states and statuses"): CREATING, BUILD, STARTING,
REBOOTING, HARD_REBOOTING, RESTORING -> PENDING; ACTIVE -> RUNNING; SHUTOFF, STOPPING,
HIBERNATING, HIBERNATED -> STOPPED; ERROR -> FAILED; DELETING -> TERMINATING;
DELETED -> TERMINATED; anything else -> UNKNOWN.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TypeVar

import aiohttp
import attrs

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
    ProviderError,
)
from gpuctl.providers.http import HttpTransport, retry_policy_for
from gpuctl.providers.hyperstack._generated import models, operations
from gpuctl.providers.pricing import PriceCache, Translator, filter_offers, usd
from gpuctl.providers.ratelimit import AccountLimiter, limits_for

errors.make_strict(models.converter)  # see errors.make_strict

CLOUD = "hyperstack"
DEFAULT_ENDPOINT = "https://infrahub-api.nexgencloud.com/v1"
CREATE = "Create_VMs"
CAPABILITIES = Capabilities(
    spot=False,
    join_method=JoinMethod.USER_DATA,
    # Hyperstack bills VMs per minute of their existence ("per-minute billing").
    billing_granularity_seconds=60,
    # Hyperstack documents no user_data limit; its VMs are OpenStack servers, whose
    # user data is at most 65,535 bytes base64-encoded: 49,152 bytes of text.
    max_join_data_bytes=49_152,
)
MAX_NAME = 50  # Create_Instances_Payload.name maxLength
MAX_PAGES = 100  # 100 pages of 100 or 200: far beyond any account
PAGE = 100
DEFAULT_IMAGE = "Ubuntu Server 22.04 LTS R535 CUDA 12.2"
DEFAULT_KEY_NAME = "gpuctl"
KUBELET_PORT = 10250

STATES: dict[str, InstanceState] = {
    "CREATING": InstanceState.PENDING,
    "BUILD": InstanceState.PENDING,
    "STARTING": InstanceState.PENDING,
    "REBOOTING": InstanceState.PENDING,
    "HARD_REBOOTING": InstanceState.PENDING,
    "RESTORING": InstanceState.PENDING,
    "ACTIVE": InstanceState.RUNNING,
    "SHUTOFF": InstanceState.STOPPED,
    "STOPPING": InstanceState.STOPPED,
    "HIBERNATING": InstanceState.STOPPED,
    "HIBERNATED": InstanceState.STOPPED,
    "ERROR": InstanceState.FAILED,
    "DELETING": InstanceState.TERMINATING,
    "DELETED": InstanceState.TERMINATED,
}

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.:=/-]")
T = TypeVar("T")


class HyperstackDriver(DriverIdentity):
    CLOUD = CLOUD
    CAPABILITIES = CAPABILITIES

    def __init__(
        self,
        config: DriverConfig,
        session: aiohttp.ClientSession,
        limiter: AccountLimiter | None = None,
    ) -> None:
        self._config = config
        endpoint = f"{config.endpoint.rstrip('/')}/v1" if config.endpoint else DEFAULT_ENDPOINT
        key = config.api_key
        block = _seconds(config.options.get("rateLimitBlockSeconds"), "rateLimitBlockSeconds")
        self._limiter = limiter or AccountLimiter(limits_for(config))
        self._transport = HttpTransport(
            session=session,
            cloud=CLOUD,
            provider=config.name,
            base_url=endpoint,
            api_key=key,
            error_mapper=functools.partial(errors.hyperstack_error, block_seconds=block),
            limiter=self._limiter,
            retry=retry_policy_for(config),
            launch_operations={CREATE},
            signer=lambda method, path, query: {"api_key": key},
        )
        self._endpoint = self._transport.base_url
        options = config.options
        self._prefix = options.get("environmentPrefix", "gpuctl-")
        self._image = options.get("imageName", DEFAULT_IMAGE)
        self._floating_ip = _flag(options.get("assignFloatingIp", "true"), "assignFloatingIp")
        self._kubelet_cidr = options.get("kubeletSourceCIDR", "0.0.0.0/0")
        self._offers: PriceCache[list[Offer]] = PriceCache(config.name)
        self._names = Translator(CLOUD, config.regions)
        self._terminations = errors.TerminateLog()
        self._environments: dict[str, str] = {}  # region -> environment name
        self._keys: dict[str, str] = {}  # environment -> key pair name
        self._environment_lock = asyncio.Lock()

    # -- offers --------------------------------------------------------------------

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        offers = await self._offers.get(CapacityType.ON_DEMAND, self._fetch_offers)
        return filter_offers(offers, gpu_type, gpu_count)

    async def _fetch_offers(self) -> list[Offer]:
        flavors, prices, stocks = await asyncio.gather(
            self._transport.call(operations.list_flavors),
            self._transport.call(operations.get_pricebook),
            self._stock(),
        )
        with errors.structure_guard(CLOUD, "List_Flavors", self.name):
            rates = {p.name: p.value for p in prices if p.name is not None}
            stock = _stock_counts(stocks)
            return [
                offer
                for group in flavors.data or []
                for flavor in group.flavors or []
                if (offer := self._offer_of(flavor, group, rates, stock)) is not None
            ]

    async def _stock(self) -> models.NewStockRetriveResponse:
        """`GET /core/stocks`; its documented 404 ("Stocks Not Found") is no stock
        information at all: the flavors' `stock_available` decides alone."""
        try:
            return await self._transport.call(operations.get_gpu_stock)
        except NotFoundError:
            return models.NewStockRetriveResponse()

    def _offer_of(
        self,
        flavor: models.FlavorFields,
        group: models.FlavorItemGetResponse,
        rates: Mapping[str, float | None],
        stock: Mapping[tuple[str, str, int], int],
    ) -> Offer | None:
        name, model = _need(flavor.name), flavor.gpu or group.gpu or ""
        native_region = _need(flavor.region_name or group.region_name)
        count = flavor.gpu_count or 0
        gpu = self._names.gpu(model) if model and count > 0 else None
        region = self._names.region(native_region)
        if gpu is None or region is None:
            return None
        price = self._config.prices.get(name)
        if price is None:
            price = _price(name, model, count, rates)
        if price is None:
            return None
        in_stock = stock.get((native_region, model, count))
        return Offer(
            provider=self.name,
            cloud=CLOUD,
            region=region,
            native_region=native_region,
            gpu_type=gpu,
            gpu_count=count,
            instance_type=name,
            capacity_type=CapacityType.ON_DEMAND,
            price_per_hour=price,
            available=flavor.stock_available is True and in_stock != 0,
        )

    # -- instances -------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> None:
        if not request.name or len(request.name) > MAX_NAME:
            raise InvalidRequestError(
                f"hyperstack: VM name must be 1..{MAX_NAME} characters: {request.name!r}",
                provider=self.name,
            )
        if request.offer.capacity_type is not CapacityType.ON_DEMAND:
            raise InvalidRequestError("hyperstack: no spot VMs", provider=self.name)
        size = len(request.join.script.encode())
        if size > CAPABILITIES.max_join_data_bytes:
            raise InvalidRequestError(
                f"hyperstack: user data of {size} bytes exceeds {CAPABILITIES.max_join_data_bytes}",
                provider=self.name,
            )

    async def launch(self, request: LaunchRequest) -> Instance:
        self._check(request)
        return await errors.launch_or_recover(
            request.name, self.find_all, lambda: self.create(request)
        )

    async def create(self, request: LaunchRequest) -> Instance:
        self._check(request)
        offer = request.offer
        environment = await self._environment(offer.native_region)
        body = models.CreateInstancesPayload(
            name=request.name,
            environment_name=environment,
            flavor_name=offer.instance_type,
            key_name=await self._key_name(environment),
            count=1,
            image_name=self._image,
            user_data=request.join.script or None,
            assign_floating_ip=self._floating_ip,
            labels=_labels(request.tags) or None,
            security_rules=[
                models.CreateSecurityRulePayload(
                    direction="ingress",
                    ethertype="IPv4",
                    protocol="tcp",
                    remote_ip_prefix=self._kubelet_cidr,
                    port_range_min=KUBELET_PORT,
                    port_range_max=KUBELET_PORT,
                )
            ],
        )
        try:
            answer = await errors.create_once(self._transport.call(operations.create_v_ms, body))
        except (InvalidRequestError, NotFoundError):
            # An environment or key pair deleted behind gpuctl's back: look again next time.
            self._environments.pop(offer.native_region, None)
            self._keys.pop(environment, None)
            raise
        with errors.create_guard(CLOUD, CREATE, self.name):
            made = _need(answer.instances)[0]
            instance = _instance(made)
        return attrs.evolve(instance, price_per_hour=offer.price_per_hour)

    async def _environment(self, region: str) -> str:
        """The environment gpuctl launches into in `region`, created if missing."""
        async with self._environment_lock:  # two first launches must not create two
            found = self._environments.get(region)
            if found is not None:
                return found
            wanted = f"{self._prefix}{region.lower()}"
            listed = await self._all_environments(wanted)
            if not any(e.name == wanted and e.region == region for e in listed):
                body = models.CreateEnvironment(name=wanted, region=region)
                await self._transport.call(operations.create_environment, body)
            self._environments[region] = wanted
            return wanted

    async def _all_environments(self, search: str) -> list[models.EnvironmentFields]:
        found: list[models.EnvironmentFields] = []
        page = 1
        while True:
            answer = await self._transport.call(
                operations.list_environments,
                page=str(page),
                page_size=str(PAGE),
                search=search,
            )
            with errors.structure_guard(CLOUD, "List_environments", self.name):
                batch = answer.environments or []
            found += batch
            if len(batch) < PAGE:
                return found
            page = _next_page(page, self.name)

    async def _key_name(self, environment: str) -> str:
        """The key pair for VMs of `environment`: `sshKeyName` (imported from `sshPublicKey`
        under that name when the environment lacks it), else the environment's first key
        pair, else `sshPublicKey` imported as gpuctl."""
        found = self._keys.get(environment)
        if found is not None:
            return found
        wanted = self._config.options.get("sshKeyName")
        names = await self._key_pairs(environment)
        if wanted in names or (wanted is None and names):
            chosen = wanted or names[0]
        else:
            chosen = wanted or DEFAULT_KEY_NAME
            public_key = self._config.options.get("sshPublicKey")
            if not public_key:
                missing = f"key pair {wanted}" if wanted else "key pair"
                raise InvalidRequestError(
                    f"hyperstack: environment {environment} has no {missing}; "
                    "set sshPublicKey to import one",
                    provider=self.name,
                )
            body = models.ImportKeypairPayload(
                name=chosen, environment_name=environment, public_key=public_key
            )
            await self._transport.call(operations.import_key_pair, body)
        self._keys[environment] = chosen
        return chosen

    async def _key_pairs(self, environment: str) -> list[str]:
        """Names of the key pairs of `environment`, sorted."""
        names: list[str] = []
        page = 1
        while True:
            answer = await self._transport.call(
                operations.list_key_pairs, page=str(page), page_size=str(PAGE)
            )
            with errors.structure_guard(CLOUD, "List_key_pairs", self.name):
                batch = answer.keypairs or []
                names += [
                    _need(k.name)
                    for k in batch
                    if k.environment is not None and k.environment.name == environment
                ]
            if len(batch) < PAGE:
                return sorted(names)
            page = _next_page(page, self.name)

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        # Every look asks the cloud: an answer to a call of its own is fresher than `since`.
        vm_id = _vm_id(instance_id)
        if vm_id is None:
            raise NotFoundError(f"hyperstack: no VM {instance_id!r}", provider=self.name)
        answer = await self._transport.call(operations.get_vm, vm_id)
        with errors.structure_guard(CLOUD, "Get_VM", self.name):
            instance = _instance(_need(answer.instance))
        return (await self._priced([instance]))[0]

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        return errors.preferred(i for i in await self._list(name) if i.name == name)

    async def find(self, name: str) -> Instance | None:
        found = await self.find_all(name)
        return found[0] if found else None

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        return [i for i in await self._list(name_prefix) if i.name.startswith(name_prefix)]

    async def _list(self, search: str) -> list[Instance]:
        found: list[Instance] = []
        page = 1
        while True:
            answer = await self._transport.call(
                operations.list_v_ms, page=page, page_size=PAGE, search=search or None
            )
            with errors.structure_guard(CLOUD, "List_VMs", self.name):
                batch = [_instance(vm) for vm in answer.instances or []]
            found += batch
            if len(batch) < PAGE:
                return await self._priced(
                    [i for i in found if i.state is not InstanceState.TERMINATED]
                )
            page = _next_page(page, self.name)

    async def _priced(self, instances: list[Instance]) -> list[Instance]:
        """`instances` with the list price of their flavor in their region: Hyperstack's VM
        answers carry no rate. From the offer cache (read again at most every 5 min); a
        catalog that cannot be read now leaves the price unknown."""
        if not instances:
            return instances
        try:
            offers = await self._offers.get(CapacityType.ON_DEMAND, self._fetch_offers)
        except ProviderError:
            return instances
        rates = {(o.instance_type, o.native_region): o.price_per_hour for o in offers}
        return [
            attrs.evolve(i, price_per_hour=rates.get((i.instance_type, i.region)))
            for i in instances
        ]

    async def terminate(self, instance_id: str) -> None:
        vm_id = _vm_id(instance_id)
        if vm_id is None or not self._terminations.due(instance_id):
            return
        try:
            await self._transport.call(operations.delete_vm, vm_id)
        except NotFoundError:
            self._terminations.gone(instance_id)
            return
        self._terminations.accepted(instance_id)

    async def cleanup(self, name: str) -> None:
        """Nothing per machine: environments and key pairs serve every VM of a region."""

    async def validate_credentials(self) -> None:
        await self._transport.call(operations.list_environments, page="1", page_size="1")

    async def close(self) -> None:
        """Nothing to release: the aiohttp session belongs to the caller."""


def _need(value: T | None) -> T:
    """A field the driver cannot do without (every field of Hyperstack's schemas is
    optional): missing, the answer is malformed."""
    if value is None:
        raise ValueError("a required field is missing")
    return value


def _instance(vm: models.InstanceFields) -> Instance:
    status = vm.status or ""
    flavor = vm.flavor
    return Instance(
        id=str(_need(vm.id)),
        name=vm.name or "",
        state=STATES.get(status, InstanceState.UNKNOWN),
        native_state=status,
        region=(vm.environment.region or "") if vm.environment else "",
        instance_type=(flavor.name or "") if flavor else "",
        capacity_type=CapacityType.ON_DEMAND,
        public_ip=vm.floating_ip or None,
        private_ip=vm.fixed_ip or None,
        launched_at=_timestamp(vm.created_at),
    )


def _price(flavor: str, gpu: str, count: int, rates: Mapping[str, float | None]) -> Decimal | None:
    if flavor in rates:
        return usd(rates[flavor])
    per_gpu = usd(rates.get(gpu))
    return None if per_gpu is None else per_gpu * count


def _stock_counts(answer: models.NewStockRetriveResponse) -> dict[tuple[str, str, int], int]:
    """(region, GPU model, GPUs per VM) -> VMs of that configuration in stock."""
    counts: dict[tuple[str, str, int], int] = {}
    for stock in answer.stocks or []:
        for model in stock.models or []:
            config = model.configurations
            if stock.region is None or model.model is None or config is None:
                continue
            for gpus, value in (
                (1, config.n_1x),
                (2, config.n_2x),
                (4, config.n_4x),
                (8, config.n_8x),
                (10, config.n_10x),
            ):
                if value is not None:
                    counts[(stock.region, model.model, gpus)] = value
    return counts


def _labels(tags: Mapping[str, str]) -> list[str]:
    return [_LABEL_BAD.sub("-", f"{k}={v}")[:255] for k, v in sorted(tags.items())]


def _vm_id(instance_id: str) -> int | None:
    return int(instance_id) if instance_id.isdigit() else None


def _seconds(text: str | None, option: str) -> float:
    if text is None:
        return errors.HYPERSTACK_BLOCK_SECONDS
    value = usd(text)
    if value is None:
        raise InvalidRequestError(f"hyperstack: option {option} must be a number >= 0")
    return float(value)


def _flag(text: str, option: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise InvalidRequestError(f"hyperstack: option {option} must be true or false")


def _timestamp(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
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
