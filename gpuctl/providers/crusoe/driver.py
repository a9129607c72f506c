"""`CrusoeDriver`: Crusoe Cloud VMs behind `gpuctl.providers.base.Driver`.

API: https://api.cloud.crusoe.ai/v1 (`{endpoint}/v1`), every request signed with the
access key ID and secret key (`signing.py`; the credential is `<key ID>:<secret>`;
anything else fails every call with AuthError, as a rejected key would),
through the generated operations in `_generated/`. VMs live in a project: the
`projectId` option, else the account's only project (`GET /organizations/projects`).

- Offers: Crusoe has no price API. VM types and on-demand prices come from the dated
  table `prices.yaml` (`DriverConfig.prices` overrides or adds types); a type
  "<family>.<N>x" has N GPUs, the family translated by the catalog. Availability is
  `GET /capacities` (every type and location in one answer, cached with the offers, 5
  min): a (type, location) with `quantity` >= 1 is available. No spot: Crusoe's VMs can
  read `billing_type: Spot`, but the create request has no field to ask for it.
- Launch: `POST /projects/{project}/compute/vms/instances` with `name`, `type`,
  `location`, `ssh_public_key` (option `sshPublicKey`; Crusoe requires one),
  `startup_script` = the join script (Crusoe runs it as root at every boot, once the
  network is up), `image` (option; Crusoe's default image when unset) and
  `reservation_specification: {selection_strategy: on_demand}` (never draw on a
  reservation the account keeps for something else). The create is asynchronous: it
  answers an operation, polled (`GET .../instances/operations/{id}`) for up to
  `operationWaitSeconds` (5): SUCCEEDED carries the VM; FAILED carries `{code,
  message}`, a typed error (capacity, quota, invalid) once a look-up by name confirms
  no VM was left; still in progress, the VM is looked up by name, else the outcome is
  unknown (`LaunchOutcomeUnknownError`) and the controller keeps looking it up; the
  operation is remembered, and a later `create` of that name reads it instead of
  sending a second POST while it runs (its FAILED is then the typed error).
  Idempotent by name (`errors.launch_or_recover`); `create` sends at most one POST.
- Terminate: `DELETE .../instances/{id}` (asynchronous; the VM shows STATE_SHUTDOWN
  until it is gone), once per poll (`errors.TerminateLog`). Crusoe keeps nothing else
  per VM: `cleanup` makes no call.

States (Crusoe's libvirt-style values): STATE_DEFINING, STATE_RESOURCING_* -> PENDING;
STATE_RUNNING, STATE_RUNNING_DEGRADED -> RUNNING; STATE_SHUTOFF, STATE_STOPPED,
STATE_PAUSED, STATE_PMSUSPENDED -> STOPPED; STATE_SHUTDOWN -> TERMINATING;
STATE_CRASHED, STATE_BLOCKED -> FAILED; STATE_DELETED -> TERMINATED; else UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from urllib.parse import unquote

import aiohttp

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
    LaunchOutcomeUnknownError,
    LaunchRequest,
    NotFoundError,
    Offer,
    ProviderError,
    TransientError,
)
from gpuctl.providers.crusoe import signing
from gpuctl.providers.crusoe._generated import models, operations
from gpuctl.providers.http import HttpTransport, retry_policy_for
from gpuctl.providers.pricing import PriceCache, PriceTable, Translator, filter_offers
from gpuctl.providers.ratelimit import AccountLimiter, limits_for

errors.make_strict(models.converter)  # see errors.make_strict

CLOUD = "crusoe"
DEFAULT_ENDPOINT = "https://api.cloud.crusoe.ai/v1"
CREATE = "createInstance"
CAPABILITIES = Capabilities(
    spot=False,
    # A startup script, run as root by a shell at boot (Crusoe's "lifecycle scripts");
    # carried inline in the create request, not as a separate object.
    join_method=JoinMethod.STARTUP_SCRIPT,
    # Prices are per GPU-hour; no billing unit is documented for VMs: per-minute assumed,
    # as most GPU clouds bill (docs/providers.md).
    billing_granularity_seconds=60,
    # Crusoe documents no size limit for startup_script: 32 KiB assumed, as for RunPod.
    max_join_data_bytes=32 * 1024,
)
# Seconds a create follows its operation: long enough for a quick FAILED (no capacity)
# or SUCCEEDED, short enough not to hold a reconcile worker while a VM boots for minutes.
DEFAULT_OPERATION_WAIT = 5.0
POLL_FIRST, POLL_MAX = 0.5, 5.0  # seconds between operation polls, doubling
PAGE = "100"

STATES: dict[str, InstanceState] = {
    "STATE_DEFINING": InstanceState.PENDING,
    "STATE_RESOURCING_LOCATION": InstanceState.PENDING,
    "STATE_RESOURCING_AGENT": InstanceState.PENDING,
    "STATE_RUNNING": InstanceState.RUNNING,
    "STATE_RUNNING_DEGRADED": InstanceState.RUNNING,
    "STATE_SHUTOFF": InstanceState.STOPPED,
    "STATE_STOPPED": InstanceState.STOPPED,
    "STATE_PAUSED": InstanceState.STOPPED,
    "STATE_PMSUSPENDED": InstanceState.STOPPED,
    "STATE_SHUTDOWN": InstanceState.TERMINATING,
    "STATE_CRASHED": InstanceState.FAILED,
    "STATE_BLOCKED": InstanceState.FAILED,
    "STATE_DELETED": InstanceState.TERMINATED,
}

_VM_TYPE = re.compile(r"^(?P<family>.+)\.(?P<count>\d+)x$")


@functools.cache
def shipped_prices() -> PriceTable:
    return PriceTable.load("gpuctl.providers.crusoe", "prices.yaml")


class CrusoeDriver(DriverIdentity):
    CLOUD = CLOUD
    CAPABILITIES = CAPABILITIES

    def __init__(
        self,
        config: DriverConfig,
        session: aiohttp.ClientSession,
        limiter: AccountLimiter | None = None,
    ) -> None:
        self._config = config
        try:
            key_id, secret = signing.split_credentials(config.api_key)
        except signing.CredentialsError as err:
            # Not a Crusoe credential: every call fails as a rejected key would
            # (AuthError: the GPUProvider's CredentialsValid condition says why).
            key_id, secret, self._bad_credential = "", "", f"crusoe: {err}"
        else:
            self._bad_credential = ""
        endpoint = f"{config.endpoint.rstrip('/')}/v1" if config.endpoint else DEFAULT_ENDPOINT
        self._limiter = limiter or AccountLimiter(limits_for(config))
        self._transport = HttpTransport(
            session=session,
            cloud=CLOUD,
            provider=config.name,
            base_url=endpoint,
            api_key=secret,  # never sent: only signatures made with it are
            error_mapper=errors.crusoe_error,
            limiter=self._limiter,
            retry=retry_policy_for(config),
            launch_operations={CREATE},
            signer=self._sign,
        )
        self._endpoint = self._transport.base_url
        self._key_id, self._secret = key_id, secret
        self._table = shipped_prices().with_overrides(config.prices)
        self._offers: PriceCache[list[Offer]] = PriceCache(config.name)
        self._capacities: PriceCache[dict[tuple[str, str], int]] = PriceCache(
            config.name, count_metrics=False
        )
        self._projects: PriceCache[str] = PriceCache(config.name, count_metrics=False)
        self._names = Translator(CLOUD, config.regions)
        self._terminations = errors.TerminateLog()
        self._wait = _seconds(config.options.get("operationWaitSeconds"), DEFAULT_OPERATION_WAIT)
        # name -> (project, operation id) of a create whose operation was still running,
        # with no VM listed yet, when `create` returned: it is followed before any new POST.
        self._in_flight: dict[str, tuple[str, str]] = {}

    @property
    def price_table(self) -> PriceTable:
        """The prices in use: the shipped table with the GPUProvider's overrides."""
        return self._table

    def _sign(self, method: str, path: str, query: Sequence[tuple[str, str]]) -> Mapping[str, str]:
        if self._bad_credential:
            raise AuthError(self._bad_credential, code="credential", provider=self.name)
        # client-go signs Go's req.URL.Path, the decoded path: unquote what goes out.
        return signing.headers(self._key_id, self._secret, method, unquote(path), query)

    def _instance(self, vm: models.InstanceV1) -> Instance:
        """The VM; its rate is the price table's (a Crusoe VM reports none)."""
        return _instance(vm, self._table.prices.get(vm.type))

    # -- project ---------------------------------------------------------------------

    async def _project(self) -> str:
        configured = self._config.options.get("projectId")
        if configured:
            return configured
        return await self._projects.get("project", self._only_project)

    async def _only_project(self) -> str:
        answer = await self._transport.call(operations.list_projects)
        ids = sorted(p.id for p in answer.items)
        if len(ids) != 1:
            raise InvalidRequestError(
                f"crusoe: the account has {len(ids)} projects; set projectId",
                provider=self.name,
            )
        return ids[0]

    # -- offers --------------------------------------------------------------------

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        offers = await self._offers.get(CapacityType.ON_DEMAND, self._build_offers)
        return filter_offers(offers, gpu_type, gpu_count)

    async def _build_offers(self) -> list[Offer]:
        free = await self._capacities.get("capacities", self._fetch_capacities)
        offers = []
        for vm_type, price in sorted(self._table.prices.items()):
            match = _VM_TYPE.match(vm_type)
            gpu = self._names.gpu(match["family"]) if match else None
            if match is None or gpu is None:
                continue
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
                        gpu_count=int(match["count"]),
                        instance_type=vm_type,
                        capacity_type=CapacityType.ON_DEMAND,
                        price_per_hour=price,
                        available=free.get((vm_type, native), 0) >= 1,
                    )
                )
        return offers

    async def _fetch_capacities(self) -> dict[tuple[str, str], int]:
        answer = await self._transport.call(operations.list_slice_capacities)
        with errors.structure_guard(CLOUD, "listSliceCapacities", self.name):
            return {(c.type or "", c.location): c.quantity for c in answer.items}

    # -- instances -------------------------------------------------------------------

    def _check(self, request: LaunchRequest) -> str:
        """Refuse what Crusoe would refuse or gpuctl cannot ask of it; the SSH key."""
        if request.offer.capacity_type is not CapacityType.ON_DEMAND:
            raise InvalidRequestError("crusoe: the API cannot ask for spot", provider=self.name)
        if not request.name:
            raise InvalidRequestError("crusoe: a VM needs a name", provider=self.name)
        size = len(request.join.script.encode())
        if size > CAPABILITIES.max_join_data_bytes:
            raise InvalidRequestError(
                f"crusoe: startup script of {size} bytes exceeds the "
                f"{CAPABILITIES.max_join_data_bytes}-byte limit",
                provider=self.name,
            )
        key = self._config.options.get("sshPublicKey", "").strip()
        if not key:
            raise InvalidRequestError(
                "crusoe: sshPublicKey is required (Crusoe creates no VM without one)",
                provider=self.name,
            )
        return key

    async def launch(self, request: LaunchRequest) -> Instance:
        self._check(request)
        return await errors.launch_or_recover(
            request.name, self.find_all, lambda: self.create(request)
        )

    async def create(self, request: LaunchRequest) -> Instance:
        ssh_key = self._check(request)
        if request.name in self._in_flight:
            return await self._earlier_create(request.name)
        project = await self._project()
        body = models.InstancesPostRequestV1(
            name=request.name,
            type=request.offer.instance_type,
            location=request.offer.native_region,
            ssh_public_key=ssh_key,
            startup_script=request.join.script or None,
            image=self._config.options.get("image") or None,
            # On demand, as offered: never draw on a reservation the account holds.
            reservation_specification=models.ReservationSpecification(
                selection_strategy=models.ReservationSpecificationSelectionStrategy.ON_DEMAND
            ),
        )
        answer = await errors.create_once(
            self._transport.call(operations.create_instance, project, body)
        )
        with errors.create_guard(CLOUD, CREATE, self.name):
            operation = answer.operation
            operation_id, state = operation.operation_id, operation.state
        with self._kept_if_abandoned(request.name, project, operation_id):
            return await self._settle(request.name, project, operation_id, state, operation.result)

    @contextlib.contextmanager
    def _kept_if_abandoned(self, name: str, project: str, operation_id: str) -> Iterator[None]:
        """A create abandoned while its operation is followed (the launch step cancels a
        create at its deadline) leaves the operation in `_in_flight`: the next create
        reads it instead of sending a second POST while the first VM may be coming."""
        try:
            yield
        except asyncio.CancelledError:
            self._in_flight[name] = (project, operation_id)
            raise

    async def _settle(
        self,
        name: str,
        project: str,
        operation_id: str,
        state: str,
        result: object,
        *,
        wait: float | None = None,
    ) -> Instance:
        """Follow the create's operation to its end, or for `operationWaitSeconds`."""
        deadline = time.monotonic() + (self._wait if wait is None else wait)
        pause = POLL_FIRST
        while state == models.OperationState.IN_PROGRESS and time.monotonic() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(POLL_MAX, pause * 2)
            try:
                operation = await self._transport.call(
                    operations.get_compute_v_ms_instances_operation, project, operation_id
                )
            except (TransientError, NotFoundError):
                continue  # the create went through; the VM is looked up below
            state, result = operation.state, operation.result
        if state == models.OperationState.SUCCEEDED:
            try:
                with errors.structure_guard(CLOUD, "getComputeVMsInstancesOperation", self.name):
                    return self._instance(models.converter.structure(result, models.InstanceV1))
            except TransientError:
                pass  # a result that is not the VM: find it by name
        try:
            found = await self.find_all(name)
        except ProviderError as err:  # the create went out: what it made is not known
            if state == models.OperationState.IN_PROGRESS:
                self._in_flight[name] = (project, operation_id)
            raise LaunchOutcomeUnknownError(
                f"crusoe {CREATE}: operation {operation_id} is {state}; looking up "
                f"{name!r} failed: {err.message}",
                provider=self.name,
            ) from err
        if found:
            return found[0]
        if state == models.OperationState.FAILED:
            raise errors.crusoe_failed_operation(result, self.name)
        if state == models.OperationState.IN_PROGRESS:
            self._in_flight[name] = (project, operation_id)
        raise LaunchOutcomeUnknownError(
            f"crusoe {CREATE}: operation {operation_id} is {state} and no VM named "
            f"{name!r} is listed yet",
            provider=self.name,
        )

    async def _earlier_create(self, name: str) -> Instance:
        """The outcome of this process's earlier create of `name`, instead of a new POST:
        while its operation runs, the outcome stays unknown (no second VM is asked for);
        once it ended, it is settled as if it had just ended."""
        project, operation_id = self._in_flight.pop(name)
        with self._kept_if_abandoned(name, project, operation_id):
            return await self._follow_earlier(name, project, operation_id)

    async def _follow_earlier(self, name: str, project: str, operation_id: str) -> Instance:
        try:
            operation = await self._transport.call(
                operations.get_compute_v_ms_instances_operation, project, operation_id
            )
        except NotFoundError:  # the cloud forgot it: what the listing shows decides
            return await self._settle(name, project, operation_id, "UNKNOWN", None, wait=0)
        except ProviderError as err:
            self._in_flight[name] = (project, operation_id)
            raise LaunchOutcomeUnknownError(
                f"crusoe {CREATE}: the earlier create's operation {operation_id} could not be "
                f"read: {err.message}",
                provider=self.name,
            ) from err
        return await self._settle(
            name, project, operation_id, operation.state, operation.result, wait=0
        )

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        # Every look asks the cloud: an answer to a call of its own is fresher than `since`.
        project = await self._project()
        found = await self._transport.call(operations.get_instance, project, instance_id)
        with errors.structure_guard(CLOUD, "getInstance", self.name):
            return self._instance(found)

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        return errors.preferred(i for i in await self._list(names=name) if i.name == name)

    async def find(self, name: str) -> Instance | None:
        found = await self.find_all(name)
        return found[0] if found else None

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        return [i for i in await self._list() if i.name.startswith(name_prefix)]

    async def _list(self, names: str | None = None) -> list[Instance]:
        project = await self._project()
        found: list[Instance] = []
        token: str | None = None
        while True:
            page = await self._transport.call(
                operations.list_instances, project, names=names, limit=PAGE, next_token=token
            )
            with errors.structure_guard(CLOUD, "listInstances", self.name):
                found += [self._instance(vm) for vm in page.items]
            if not page.next_page_token or page.next_page_token == token:
                return [i for i in found if i.state is not InstanceState.TERMINATED]
            token = page.next_page_token

    async def terminate(self, instance_id: str) -> None:
        """`DELETE .../instances/{id}`, once per poll; an unknown VM is gone."""
        if not self._terminations.due(instance_id):
            return
        project = await self._project()
        try:
            await self._transport.call(operations.delete_instance, project, instance_id)
        except NotFoundError:
            self._terminations.gone(instance_id)
            return
        self._terminations.accepted(instance_id)

    async def cleanup(self, name: str) -> None:
        """Crusoe keeps nothing per VM besides the VM (the script is part of it)."""

    async def validate_credentials(self) -> None:
        """A signed `GET /organizations/projects`: a bad key or signature is AuthError; a
        `projectId` the account does not have, or several projects and none chosen, is
        InvalidRequestError (the provider is not Ready, and says why)."""
        answer = await self._transport.call(operations.list_projects)
        ids = sorted(p.id for p in answer.items)
        configured = self._config.options.get("projectId")
        if configured and configured not in ids:
            raise InvalidRequestError(
                f"crusoe: projectId {configured!r} is not a project of this account",
                provider=self.name,
            )
        if not configured and len(ids) != 1:
            raise InvalidRequestError(
                f"crusoe: the account has {len(ids)} projects; set projectId",
                provider=self.name,
            )

    async def close(self) -> None:
        """Nothing to release: the aiohttp session belongs to the caller."""


def _instance(vm: models.InstanceV1, price: Decimal | None = None) -> Instance:
    addresses = [ip for nic in vm.network_interfaces for ip in nic.ips]
    public = next((a.public_ipv4.address for a in addresses if a.public_ipv4.address), None)
    private = next((a.private_ipv4.address for a in addresses if a.private_ipv4.address), None)
    spot = (vm.billing_type or "").lower() == "spot"
    return Instance(
        id=vm.id,
        name=vm.name,
        state=STATES.get(vm.state, InstanceState.UNKNOWN),
        native_state=vm.state,
        region=vm.location,
        instance_type=vm.type,
        capacity_type=CapacityType.SPOT if spot else CapacityType.ON_DEMAND,
        public_ip=public,
        private_ip=private,
        price_per_hour=price,
        launched_at=_timestamp(vm.created_at),
    )


def _timestamp(text: str) -> datetime.datetime | None:
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _seconds(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise InvalidRequestError(f"crusoe: operationWaitSeconds must be >= 0, not {text!r}")
    return value
