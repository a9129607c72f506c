"""`LambdaDriver`: Lambda Cloud's On-Demand instances behind `gpuctl.providers.base.Driver`.

API: https://cloud.lambda.ai/api/v1 (`DriverConfig.endpoint` replaces the scheme and host),
bearer API key, through the generated operations in `_generated/`.

- Offers: `GET /instance-types`; one on-demand offer per (instance type, region listed in
  `regions_with_capacity_available`), price `price_cents_per_hour` / 100 unless
  `DriverConfig.prices[<instance type name>]` overrides it. Lambda has no spot.
- Launch: `POST /instance-operations/launch` with `name`, `user_data` = the join script
  (cloud-init user data), one SSH key (`options["sshKeyName"]`, else the account's first
  key: Lambda requires exactly one), `image` (`options["imageFamily"]` or
  `options["imageId"]`), `file_system_names` (`options["fileSystemNames"]`,
  comma-separated: persistent file systems to attach), and the request's tags (keys
  lower-cased, characters Lambda refuses replaced by "-"). Idempotent by name
  (`errors.launch_or_recover`); `create` sends exactly one launch.
- Looks with `since` (teardown, liveness): one `GET /instances` shared by every caller
  (`gpuctl.providers.snapshot`): Lambda allows one request a second, the list shows
  every instance in every state it lists (terminated ones leave it); an instance no
  list has shown yet is asked for by id (`GET /instances/{id}`).
- Terminate: `POST /instance-operations/terminate`, once per instance per
  `errors.TERMINATE_RESEND_SECONDS` (`errors.TerminateLog`); an unknown id is not an
  error.

States: booting -> PENDING, active -> RUNNING, unhealthy -> FAILED,
terminating -> TERMINATING, terminated -> TERMINATED, preempted -> PREEMPTED,
anything else -> UNKNOWN.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from decimal import Decimal

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
from gpuctl.providers.http import HttpTransport, retry_policy_for
from gpuctl.providers.lambdacloud._generated import models, operations
from gpuctl.providers.pricing import PriceCache, Translator, filter_offers, usd
from gpuctl.providers.ratelimit import AccountLimiter, limits_for
from gpuctl.providers.snapshot import Snapshots

errors.make_strict(models.converter)  # see errors.make_strict

CLOUD = "lambda"
DEFAULT_ENDPOINT = "https://cloud.lambda.ai"
LAUNCH = "launchInstance"
CAPABILITIES = Capabilities(
    spot=False,
    join_method=JoinMethod.USER_DATA,
    billing_granularity_seconds=60,  # "bills in one-minute increments" (Lambda billing docs)
    max_join_data_bytes=1_000_000,  # user_data "cannot exceed 1MB"
)
MAX_NAME = 64

STATES: dict[str, InstanceState] = {
    "booting": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "unhealthy": InstanceState.FAILED,
    "terminating": InstanceState.TERMINATING,
    "terminated": InstanceState.TERMINATED,
    "preempted": InstanceState.PREEMPTED,
}

_TAG_KEY_BAD = re.compile(r"[^a-z0-9:-]")


class LambdaDriver(DriverIdentity):
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
            error_mapper=errors.lambda_error,
            limiter=self._limiter,
            retry=retry_policy_for(config),
            idempotent_operations={"terminateInstance"},
            launch_operations={LAUNCH},
        )
        self._endpoint = self._transport.base_url
        self._prices: PriceCache[list[Offer]] = PriceCache(config.name)
        self._names = Translator(CLOUD, config.regions)
        self._terminations = errors.TerminateLog()
        self._snapshots = Snapshots(
            config.name, self._all, lambda i: i.state is InstanceState.TERMINATED, self._get
        )
        self._file_systems = [
            n.strip() for n in config.options.get("fileSystemNames", "").split(",") if n.strip()
        ]

    # -- offers --------------------------------------------------------------------

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        offers = await self._prices.get(CapacityType.ON_DEMAND, self._fetch_offers)
        return filter_offers(offers, gpu_type, gpu_count)

    async def _fetch_offers(self) -> list[Offer]:
        answer = await self._transport.call(operations.list_instance_types)
        with errors.structure_guard(CLOUD, "listInstanceTypes", self.name):
            return [
                offer
                for type_name, item in sorted(answer.data.items())
                for offer in self._offers_of(type_name, item)
            ]

    def _offers_of(self, type_name: str, item: models.InstanceTypesItem) -> list[Offer]:
        kind = item.instance_type
        gpu = self._names.gpu(kind.gpu_description)
        price = self._config.prices.get(kind.name)
        if price is None:
            price = usd(Decimal(kind.price_cents_per_hour) / 100)
        if gpu is None or price is None or kind.specs.gpus < 1:
            return []
        offers = []
        for found in item.regions_with_capacity_available:
            region = self._names.region(found.name)
            if region is None:
                continue
            offers.append(
                Offer(
                    provider=self.name,
                    cloud=CLOUD,
                    region=region,
                    native_region=found.name,
                    gpu_type=gpu,
                    gpu_count=kind.specs.gpus,
                    instance_type=kind.name or type_name,
                    capacity_type=CapacityType.ON_DEMAND,
                    price_per_hour=price,
                )
            )
        return offers

    # -- instances -------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> None:
        if len(request.name) > MAX_NAME:
            raise InvalidRequestError(
                f"lambda: instance name longer than {MAX_NAME}: {request.name!r}",
                provider=self.name,
            )
        if request.offer.capacity_type is not CapacityType.ON_DEMAND:
            raise InvalidRequestError("lambda: no spot instances", provider=self.name)
        if len(request.join.script.encode()) > CAPABILITIES.max_join_data_bytes:
            raise InvalidRequestError("lambda: user data over 1 MB", provider=self.name)

    async def launch(self, request: LaunchRequest) -> Instance:
        self._check(request)
        return await errors.launch_or_recover(
            request.name, self.find_all, lambda: self.create(request)
        )

    async def create(self, request: LaunchRequest) -> Instance:
        self._check(request)
        offer = request.offer
        body = models.LaunchInstanceRequest(
            region_name=offer.native_region,
            instance_type_name=offer.instance_type,
            ssh_key_names=[await self._ssh_key()],
            name=request.name,
            user_data=request.join.script or None,
            image=self._image(),
            tags=_tags(request.tags) or None,
            file_system_names=self._file_systems or None,
        )
        answer = await errors.create_once(self._transport.call(operations.launch_instance, body))
        with errors.create_guard(CLOUD, LAUNCH, self.name):  # unreadable: it may exist
            instance_id = answer.data.instance_ids[0]
        # Launch answers ids only: describe the instance from the request rather than
        # spending another request of the 1/s budget on it.
        return Instance(
            id=instance_id,
            name=request.name,
            state=InstanceState.PENDING,
            native_state="booting",
            region=offer.native_region,
            instance_type=offer.instance_type,
            capacity_type=CapacityType.ON_DEMAND,
            price_per_hour=offer.price_per_hour,
        )

    async def _ssh_key(self) -> str:
        configured = self._config.options.get("sshKeyName")
        if configured:
            return configured
        keys = await self._transport.call(operations.list_ssh_keys)
        with errors.structure_guard(CLOUD, "listSSHKeys", self.name):
            names = sorted(k.name for k in keys.data)
        if not names:
            raise InvalidRequestError(
                "lambda: the account has no SSH key; add one or set sshKeyName",
                provider=self.name,
            )
        return names[0]

    def _image(self) -> models.LaunchInstanceRequestImage | None:
        options = self._config.options
        if options.get("imageId"):
            return models.LaunchInstanceRequestImage(id=options["imageId"])
        if options.get("imageFamily"):
            return models.LaunchInstanceRequestImage(family=options["imageFamily"])
        return None

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        """`since` given: served from the shared list of every instance (`Snapshots`)."""
        return await self._snapshots.look(instance_id, since, listed_by)

    async def _get(self, instance_id: str) -> Instance:
        answer = await self._transport.call(operations.get_instance, instance_id)
        with errors.structure_guard(CLOUD, "getInstance", self.name):
            return _instance(answer.data)

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        if since is not None:
            return await self._snapshots.find_all(name, since)
        return errors.preferred(i for i in await self._list() if i.name == name)

    async def find(self, name: str) -> Instance | None:
        found = await self.find_all(name)
        return found[0] if found else None

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        every = await self._snapshots.list_every()  # a snapshot too
        return [i for i in _live(every) if i.name.startswith(name_prefix)]

    async def _list(self) -> list[Instance]:
        return _live(await self._all())

    async def _all(self) -> list[Instance]:
        answer = await self._transport.call(operations.list_instances)
        with errors.structure_guard(CLOUD, "listInstances", self.name):
            return [_instance(i) for i in answer.data]

    async def terminate(self, instance_id: str) -> None:
        if not self._terminations.due(instance_id):
            return
        body = models.TerminateInstanceRequest(instance_ids=[instance_id])
        try:
            await self._transport.call(operations.terminate_instance, body)
        except NotFoundError:
            self._terminations.gone(instance_id)
            self._snapshots.gone(instance_id)
            return
        self._terminations.accepted(instance_id)
        self._snapshots.terminated(instance_id)

    async def cleanup(self, name: str) -> None:
        """Lambda keeps nothing per machine besides the machine."""

    async def validate_credentials(self) -> None:
        await self._transport.call(operations.list_ssh_keys)

    async def close(self) -> None:
        """Nothing to release: the aiohttp session belongs to the caller."""


def _live(instances: list[Instance]) -> list[Instance]:
    return [i for i in instances if i.state is not InstanceState.TERMINATED]


def _instance(found: models.Instance) -> Instance:
    price = usd(Decimal(found.instance_type.price_cents_per_hour) / 100)
    return Instance(
        id=found.id,
        name=found.name or "",
        state=STATES.get(found.status, InstanceState.UNKNOWN),
        native_state=found.status,
        region=found.region.name,
        instance_type=found.instance_type.name,
        capacity_type=CapacityType.ON_DEMAND,
        public_ip=found.ip,
        private_ip=found.private_ip,
        price_per_hour=price,
    )


def _tags(tags: Mapping[str, str]) -> list[models.RequestedTagEntry]:
    """Tags as Lambda accepts them: key ^[a-z][a-z0-9-:]+$ (<= 55), value <= 128."""
    entries = []
    for key, value in sorted(tags.items()):
        clean = _TAG_KEY_BAD.sub("-", key.lower()).lstrip("0123456789-:")[:55]
        if len(clean) >= 2:
            entries.append(models.RequestedTagEntry(key=clean, value=value[:128]))
    return entries
