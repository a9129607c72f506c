"""`PaperspaceDriver`: Paperspace (DigitalOcean) machines behind `gpuctl.providers.base.Driver`.

API: https://api.paperspace.com/v1 (`{endpoint}/v1`), bearer API key, through the
generated operations in `_generated/`.

- Offers: Paperspace has no price API. Machine types and on-demand prices come from the
  dated table `prices.yaml` (`DriverConfig.prices` overrides or adds types); a type
  "<label>" is one GPU, "<label>x<N>" N GPUs, the label translated by the catalog. Each
  (type, region) is checked with `GET /machine-availability` (cached with the offers, 5
  min), only for the GPU type and count asked. No spot.
- Launch: a startup script named after the machine carries the join script
  (`POST /startup-scripts`, isRunOnce; an existing script of that name is reused), then
  `POST /machines` with `name`, `machineType`, `templateId`, `diskSize`, `region`,
  `startupScriptId`, `startOnCreate: true`, `emailPassword: false` (the spec's default
  is true: a password e-mail per machine) and `publicIpType` (`options["publicIpType"]`,
  Paperspace's default when unset). Idempotent by name; `create` sends one
  `POST /machines`. `templateId` is `options["templateId"]`, else the first OS template
  named "ML-in-a-Box" (NVIDIA drivers preinstalled), else the first "Ubuntu" one, that
  offers the machine type. `diskSize` is `options["diskSize"]` GB (100 by default).
- Provisioning: the create answers the machine and its `create` event; while the machine
  provisions, `get` reads that event (`GET /machine-events/{id}`, or the machine's
  events when a restart forgot the id): state `error` makes the instance FAILED.
- Terminate: `DELETE /machines/{id}`, once per poll. The startup script is left until
  the machine is gone: `cleanup(name)` then unassigns and deletes it.

States: provisioning, starting, restarting, upgrading -> PENDING (FAILED when the create
event failed); ready, serviceready -> RUNNING; off, stopping -> STOPPED; a machine with
`dtDeleted` -> TERMINATED; anything else -> UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import re
from collections.abc import AsyncIterator

import aiohttp
import attrs

from gpuctl.providers import errors
from gpuctl.providers.base import (
    AuthError,
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
from gpuctl.providers.paperspace._generated import models, operations
from gpuctl.providers.pricing import PriceCache, PriceTable, Translator, filter_offers, usd
from gpuctl.providers.ratelimit import AccountLimiter, limits_for

errors.make_strict(models.converter)  # see errors.make_strict

log = logging.getLogger(__name__)

CLOUD = "paperspace"
DEFAULT_ENDPOINT = "https://api.paperspace.com/v1"
CREATE = "machines-create"
CAPABILITIES = Capabilities(
    spot=False,
    join_method=JoinMethod.STARTUP_SCRIPT,
    # Prices are per hour and Paperspace documents no finer unit for machines: assume
    # the conservative hour.
    billing_granularity_seconds=3600,
    # Paperspace runs a startup script as bash and documents 16 KB as its size limit (the
    # OpenAPI spec states none); 16,000 bytes holds under either reading of "KB".
    max_join_data_bytes=16_000,
)
DEFAULT_DISK_GB = 100
PAGE = 120  # the API's maximum page size

STATES: dict[str, InstanceState] = {
    "provisioning": InstanceState.PENDING,
    "starting": InstanceState.PENDING,
    "restarting": InstanceState.PENDING,
    "upgrading": InstanceState.PENDING,
    "ready": InstanceState.RUNNING,
    "serviceready": InstanceState.RUNNING,
    "off": InstanceState.STOPPED,
    "stopping": InstanceState.STOPPED,
}

_MACHINE_TYPE = re.compile(r"^(?P<label>.+?)(?:x(?P<count>\d+))?$")


@functools.cache
def shipped_prices() -> PriceTable:
    return PriceTable.load("gpuctl.providers.paperspace", "prices.yaml")


class PaperspaceDriver(DriverIdentity):
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
        self._limiter = limiter or AccountLimiter(limits_for(config))
        self._transport = HttpTransport(
            session=session,
            cloud=CLOUD,
            provider=config.name,
            base_url=endpoint,
            api_key=config.api_key,
            error_mapper=errors.paperspace_error,
            limiter=self._limiter,
            retry=retry_policy_for(config),
            launch_operations={CREATE},
        )
        self._endpoint = self._transport.base_url
        self._table = shipped_prices().with_overrides(config.prices)
        self._disk = _disk_size(config.options.get("diskSize"))
        self._offers: PriceCache[list[Offer]] = PriceCache(config.name)
        self._available: PriceCache[bool] = PriceCache(config.name, count_metrics=False)
        self._templates: PriceCache[list[models.OsTemplate]] = PriceCache(
            config.name, count_metrics=False
        )
        self._names = Translator(CLOUD, config.regions)
        self._terminations = errors.TerminateLog()
        self._public_ip = _public_ip_type(config.options.get("publicIpType"))
        # machine id -> id of its create event, while it provisions (see `get`)
        self._create_events: dict[str, str] = {}

    @property
    def price_table(self) -> PriceTable:
        """The prices in use: the shipped table with the GPUProvider's overrides."""
        return self._table

    # -- offers --------------------------------------------------------------------

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        build = functools.partial(self._build_offers, gpu_type, gpu_count)
        offers = await self._offers.get((CapacityType.ON_DEMAND, gpu_type, gpu_count), build)
        return filter_offers(offers, gpu_type, gpu_count)

    async def _build_offers(self, gpu_type: str | None, gpu_count: int | None) -> list[Offer]:
        candidates = [
            offer
            for offer in self._table_offers()
            if (gpu_type is None or offer.gpu_type == gpu_type)
            and (gpu_count is None or offer.gpu_count == gpu_count)
        ]
        available = await asyncio.gather(*(self._availability(o) for o in candidates))
        return [attrs.evolve(o, available=ok) for o, ok in zip(candidates, available, strict=True)]

    def _table_offers(self) -> list[Offer]:
        offers = []
        for machine_type, price in sorted(self._table.prices.items()):
            match = _MACHINE_TYPE.match(machine_type)
            gpu = self._names.gpu(match["label"]) if match else None
            if match is None or gpu is None:
                continue
            count = int(match["count"] or 1)
            for native in self._names.native_regions():
                region = self._names.region(native)
                if region is None:
                    continue
                offers.append(
                    Offer(
                        provider=self.name,
                        cloud=CLOUD,
                        region=region,
                        native_region=native,
                        gpu_type=gpu,
                        gpu_count=count,
                        instance_type=machine_type,
                        capacity_type=CapacityType.ON_DEMAND,
                        price_per_hour=price,
                    )
                )
        return offers

    async def _availability(self, offer: Offer) -> bool:
        async def fetch() -> bool:
            answer = await self._transport.call(
                operations.machine_availability_list,
                machine_type=offer.instance_type,
                region=offer.native_region,
            )
            return answer.available is True

        return await self._available.get((offer.instance_type, offer.native_region), fetch)

    # -- instances -------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> None:
        if request.offer.capacity_type is not CapacityType.ON_DEMAND:
            raise InvalidRequestError("paperspace: no spot machines", provider=self.name)
        if not request.name:
            raise InvalidRequestError("paperspace: a machine needs a name", provider=self.name)
        size = len(request.join.script.encode())
        if size > CAPABILITIES.max_join_data_bytes:
            raise InvalidRequestError(
                f"paperspace: startup script of {size} bytes exceeds the "
                f"{CAPABILITIES.max_join_data_bytes}-byte limit",
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
        script_id = await self._startup_script(request.name, request.join.script)
        body = models.MachinesCreateRequest(
            name=request.name,
            machine_type=offer.instance_type,
            template_id=await self._template(offer.instance_type),
            disk_size=self._disk,
            region=offer.native_region,
            startup_script_id=script_id,
            start_on_create=True,
            # The spec's default is true: every machine would e-mail a root password.
            email_password=False,
            public_ip_type=self._public_ip,
        )
        answer = await errors.create_once(self._transport.call(operations.machines_create, body))
        with errors.create_guard(CLOUD, CREATE, self.name):
            instance = _instance(answer.data)
            event = answer.event
        self._create_events[instance.id] = event.id
        return _failed(instance, event) if event.state == "error" else instance

    async def _startup_script(self, name: str, script: str) -> str:
        """The id of the startup script named `name`, created with `script` if missing."""
        existing = [s async for s in self._scripts(name)]
        if existing:
            return existing[0].id
        body = models.StartupScriptsCreateRequest(name=name, script=script, is_run_once=True)
        created = await self._transport.call(operations.startup_scripts_create, body)
        return created.id

    async def _scripts(self, name: str) -> AsyncIterator[models.StartupScript]:
        after: str | None = None
        while True:
            page = await self._transport.call(
                operations.startup_scripts_list, name=name, limit=PAGE, after=after
            )
            for script in page.items:
                if script.name == name and script.dt_deleted is None:
                    yield script
            if not page.has_more or not page.next_page:
                return
            after = page.next_page

    async def _template(self, machine_type: str) -> str:
        configured = self._config.options.get("templateId")
        if configured:
            return configured
        templates = await self._templates.get("os-templates", self._fetch_templates)
        for wanted in ("ML-in-a-Box", "Ubuntu"):
            for template in templates:
                if wanted.lower() in template.name.lower() and _offers_type(template, machine_type):
                    return template.id
        raise InvalidRequestError(
            f"paperspace: no Ubuntu OS template offers {machine_type}; set templateId",
            provider=self.name,
        )

    async def _fetch_templates(self) -> list[models.OsTemplate]:
        found: list[models.OsTemplate] = []
        after: str | None = None
        while True:
            page = await self._transport.call(operations.os_templates_list, limit=PAGE, after=after)
            found += page.items
            if not page.has_more or not page.next_page:
                return sorted(found, key=lambda t: t.name, reverse=True)  # newest release first
            after = page.next_page

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        """The machine; while it provisions, its create event too: Paperspace reports a
        failed provisioning there (state `error`), not in the machine's state, which stays
        `provisioning`. Such a machine is FAILED at once rather than after the
        registration timeout."""
        machine = await self._transport.call(operations.machines_get, instance_id)
        with errors.structure_guard(CLOUD, "machines-get", self.name):
            instance = _instance(machine)
        if instance.state is not InstanceState.PENDING:
            self._create_events.pop(instance_id, None)
            return instance
        try:
            event = await self._create_event(instance_id)
        except ProviderError as err:  # the event only adds to the machine's own state
            log.debug("paperspace: no create event of %s: %s", instance_id, err)
            return instance
        if event is not None and event.state == "error":
            return _failed(instance, event)
        return instance

    async def _create_event(self, machine_id: str) -> models.MachineEvent | None:
        """The machine's create event: by the id its create answered, else (a restart
        forgot it) the newest `create` in the machine's events."""
        event_id = self._create_events.get(machine_id)
        if event_id:
            try:
                return await self._transport.call(operations.machine_events_get, event_id)
            except NotFoundError:
                pass
        page = await self._transport.call(
            operations.machine_events_list, machine_id=machine_id, limit=PAGE
        )
        with errors.structure_guard(CLOUD, "machineEvents-list", self.name):
            creates = [e for e in page.items if e.name == "create" and e.machine_id == machine_id]
        if not creates:
            return None
        newest = max(creates, key=lambda e: e.dt_created)
        self._create_events[machine_id] = newest.id
        return newest

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        return errors.preferred(i for i in await self._list(name=name) if i.name == name)

    async def find(self, name: str) -> Instance | None:
        found = await self.find_all(name)
        return found[0] if found else None

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        return [i for i in await self._list() if i.name.startswith(name_prefix)]

    async def _list(self, name: str | None = None) -> list[Instance]:
        found: list[Instance] = []
        after: str | None = None
        while True:
            page = await self._transport.call(
                operations.machines_list, name=name, limit=PAGE, after=after
            )
            with errors.structure_guard(CLOUD, "machines-list", self.name):
                found += [_instance(m) for m in page.items]
            if not page.has_more or not page.next_page:
                return [i for i in found if i.state is not InstanceState.TERMINATED]
            after = page.next_page

    async def terminate(self, instance_id: str) -> None:
        """`DELETE /machines/{id}`, once per poll (`errors.TerminateLog`); unknown: gone.

        The machine's startup script stays: it is assigned to the machine until the
        machine is gone, and `cleanup(name)` removes it then.
        """
        if not self._terminations.due(instance_id):
            return
        try:
            await self._transport.call(operations.machines_delete, instance_id)
        except NotFoundError:
            self._terminations.gone(instance_id)
            self._create_events.pop(instance_id, None)
            return
        self._terminations.accepted(instance_id)

    async def cleanup(self, name: str) -> None:
        """Unassign and delete the startup script(s) named `name` whose machines are gone.

        A script still assigned to a machine that exists (not yet deleted) is left for a
        later call: a machine's script goes only after the machine.
        """
        for script in [s async for s in self._scripts(name)]:
            if any([await self._exists(m) for m in script.assigned_machine_ids]):
                continue
            for machine_id in script.assigned_machine_ids:
                with contextlib.suppress(NotFoundError, InvalidRequestError):
                    body = models.StartupScriptsUnassignRequest(machine_id=machine_id)
                    await self._transport.call(operations.startup_scripts_unassign, script.id, body)
            with contextlib.suppress(NotFoundError):
                await self._transport.call(operations.startup_scripts_delete, script.id)

    async def _exists(self, machine_id: str) -> bool:
        try:
            machine = await self._transport.call(operations.machines_get, machine_id)
        except NotFoundError:
            return False
        return machine.dt_deleted is None

    async def validate_credentials(self) -> None:
        session = await self._transport.call(operations.auth_session)
        if session is None:
            raise AuthError("paperspace: the API key has no session", provider=self.name)

    async def close(self) -> None:
        """Nothing to release: the aiohttp session belongs to the caller."""


def _instance(machine: models.Machine) -> Instance:
    state = STATES.get(machine.state, InstanceState.UNKNOWN)
    if machine.dt_deleted is not None:
        state = InstanceState.TERMINATED
    return Instance(
        id=machine.id,
        name=machine.name,
        state=state,
        native_state=machine.state,
        region=machine.region,
        instance_type=machine.machine_type,
        capacity_type=CapacityType.ON_DEMAND,
        public_ip=machine.public_ip,
        private_ip=machine.private_ip,
        price_per_hour=usd(machine.usage_rate),
        launched_at=_timestamp(machine.dt_created),
    )


def _failed(instance: Instance, event: models.MachineEvent) -> Instance:
    """The machine whose create event failed: FAILED, the cloud's error as its state."""
    error = (event.error or "no details").replace("\n", " ")[:200]
    return attrs.evolve(
        instance, state=InstanceState.FAILED, native_state=f"provisioning failed: {error}"
    )


def _public_ip_type(text: str | None) -> str | None:
    if text is None:
        return None
    if text not in ("static", "dynamic", "none"):
        raise InvalidRequestError(
            f"paperspace: publicIpType must be static, dynamic or none, not {text!r}"
        )
    return text


def _offers_type(template: models.OsTemplate, machine_type: str) -> bool:
    listed = {t.machine_type_label: t.is_available for t in template.available_machine_types}
    return listed.get(machine_type, not listed)  # a template listing nothing: assume yes


def _timestamp(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _disk_size(text: str | None) -> float:
    if text is None:
        return DEFAULT_DISK_GB
    size = usd(text)
    if size is None or size < 50:
        raise InvalidRequestError(f"paperspace: diskSize must be a number >= 50, not {text!r}")
    return float(size)
