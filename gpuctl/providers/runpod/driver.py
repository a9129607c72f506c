"""`RunPodDriver`: RunPod GPU pods behind `gpuctl.providers.base.Driver`.

APIs (generated operations in `_generated/`), bearer API key:
- REST v1, https://rest.runpod.io/v1 (`{endpoint}/v1`): create, list, get, delete pods.
  Only v1 can create a spot pod (`interruptible: true`); v2 has no spot field.
- REST v2, https://api.runpod.io (`{endpoint}`): the GPU catalog,
  `GET /v2/catalog/gpus?include=AVAILABILITY&product=POD&cloud=<cloudType>&count=<n>`.

Offers: one per (GPU type, data centre in `dataCenters`, GPU count 1..maxCount) for the
configured cloud type (`options["cloudType"]`, SECURE by default), per capacity type.
RunPod prices GPUs, not machines: an offer's price is the per-GPU-hour price times the
count, and `DriverConfig.prices` are per GPU-hour too: `<gpuTypeId>` overrides the
on-demand price, `spot:<gpuTypeId>` the spot price. The v2 catalog has no spot price, so
without an override the spot price is an ESTIMATE: the community price times
`options["spotPriceFactor"]` (0.6 by default); the rate actually charged is the pod's
`costPerHr`, reported on the Instance once the pod exists. Availability is per data
centre (`NONE` = unavailable) for the GPU count asked; when `list_offers` is called
without a count, the count-1 availability stands for every count (one catalog read
instead of eight).

Launch: `POST /pods` with `name`, `gpuTypeIds` [type], `gpuCount`, `dataCenterIds`
[data centre], `cloudType`, `interruptible` (spot), `env` = the join environment,
`dockerStartCmd` = `bash -c <join script>`, `imageName` (`options["imageName"]`) or
`templateId` (`options["templateId"]`), `ports` (`options["ports"]`, comma-separated),
`containerDiskInGb` and `volumeInGb` (`options`, RunPod's defaults 50 and 20 when unset;
a volume of 0 is none). Idempotent by name; `create` sends exactly one POST.

Looks: `get(id, since=T)` and `find_all(name, since=T)` (the controllers' looks in a
teardown and liveness polls) are answered from one `GET /pods` of every pod, shared by
every caller, sent at or after T (`gpuctl.providers.snapshot`): under RunPod's 60 calls
a minute, a GET per pod per look took minutes of the budget in a mass teardown. RunPod's
list shows pods in every `desiredStatus` (RUNNING, EXITED, TERMINATED); a pod a list
showed and a later one does not is gone; a pod no list has shown yet is looked at by id.
Without `since`, every call asks the cloud (`GET /pods/{id}`, `GET /pods?name=`). The
shared list begins at most once per `LIST_SPACING` (5 s; a look inside a reconcile is
put off until then), and the credential check's list is kept as one: looks at every
second took a list a second, most of the minute's budget.

Terminate: `DELETE /pods/{id}` once per poll; a 400 or 404 is confirmed with a GET
(RunPod's spec answers 400 for an unknown pod).

States (v1 `desiredStatus`): RUNNING -> RUNNING, EXITED -> STOPPED, or PREEMPTED when the
pod is interruptible (RunPod stops a reclaimed spot pod; it still exists, and costs
storage, until terminated), TERMINATED -> TERMINATED, anything else -> UNKNOWN.
"""

from __future__ import annotations

import datetime
import functools
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
from gpuctl.providers.pricing import PriceCache, Translator, filter_offers, usd
from gpuctl.providers.ratelimit import AccountLimiter, limits_for
from gpuctl.providers.runpod._generated import models_v1, models_v2, operations_v1, operations_v2
from gpuctl.providers.snapshot import Snapshots

errors.make_strict(models_v1.converter)  # see errors.make_strict
errors.make_strict(models_v2.converter)

CLOUD = "runpod"
DEFAULT_V1 = "https://rest.runpod.io/v1"
DEFAULT_V2 = "https://api.runpod.io"
CREATE = "CreatePod"
CAPABILITIES = Capabilities(
    spot=True,
    join_method=JoinMethod.CONTAINER_ENV,
    billing_granularity_seconds=60,  # "credits are charged every minute the Pod is running"
    max_join_data_bytes=32 * 1024,  # no documented limit on env: a conservative bound
)
MAX_NAME = 191
# The shared list of every pod begins at most once per this (`Snapshots.spacing`): at
# most 12 of RunPod's 60 calls a minute, the rest for creates, deletes and the catalog
# (at 3 s, lists took 20-31 a minute under restarts in chaos seed 6, and a request went
# 154 s without a create); a look waits at most this long for its list.
LIST_SPACING = datetime.timedelta(seconds=5)
DEFAULT_SPOT_FACTOR = Decimal("0.6")

STATES: dict[str, InstanceState] = {
    "RUNNING": InstanceState.RUNNING,
    "EXITED": InstanceState.STOPPED,
    "TERMINATED": InstanceState.TERMINATED,
}


class RunPodDriver(DriverIdentity):
    CLOUD = CLOUD
    CAPABILITIES = CAPABILITIES

    def __init__(
        self,
        config: DriverConfig,
        session: aiohttp.ClientSession,
        limiter: AccountLimiter | None = None,
    ) -> None:
        self._config = config
        limiter = self._limiter = limiter or AccountLimiter(limits_for(config))
        endpoint = config.endpoint.rstrip("/") if config.endpoint else None

        def transport(base_url: str, launches: frozenset[str] = frozenset()) -> HttpTransport:
            return HttpTransport(
                session=session,
                cloud=CLOUD,
                provider=config.name,
                base_url=base_url,
                api_key=config.api_key,
                error_mapper=errors.runpod_error,
                limiter=limiter,
                retry=retry_policy_for(config),
                launch_operations=launches,
            )

        self._v1 = transport(f"{endpoint}/v1" if endpoint else DEFAULT_V1, frozenset({CREATE}))
        self._v2 = transport(endpoint or DEFAULT_V2)
        self._endpoint = self._v2.base_url
        self._cloud_type = config.options.get("cloudType", "SECURE").upper()
        if self._cloud_type not in ("SECURE", "COMMUNITY"):
            raise InvalidRequestError(
                f"runpod: cloudType must be SECURE or COMMUNITY, not {self._cloud_type!r}"
            )
        self._spot_factor = _factor(config.options.get("spotPriceFactor"))
        self._offers: PriceCache[list[Offer]] = PriceCache(config.name)
        self._catalog: PriceCache[models_v2.ListGpuTypesResponse] = PriceCache(
            config.name, count_metrics=False
        )
        self._names = Translator(CLOUD, config.regions)
        self._terminations = errors.TerminateLog()
        self._container_disk = _gigabytes(config.options, "containerDiskInGb", minimum=1)
        self._volume = _gigabytes(config.options, "volumeInGb", minimum=0)
        self._snapshots = Snapshots(
            config.name,
            self._pods,
            lambda i: i.state is InstanceState.TERMINATED,
            self._get,
            spacing=LIST_SPACING.total_seconds(),
        )

    # -- offers --------------------------------------------------------------------

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        offers: list[Offer] = []
        for capacity_type in (CapacityType.ON_DEMAND, CapacityType.SPOT):
            build = functools.partial(self._build_offers, capacity_type, gpu_count)
            offers += await self._offers.get((capacity_type, gpu_count), build)
        return filter_offers(offers, gpu_type, gpu_count)

    async def _build_offers(self, capacity_type: CapacityType, count: int | None) -> list[Offer]:
        catalog = await self._catalog.get(
            count or 1, functools.partial(self._fetch_catalog, count or 1)
        )
        with errors.structure_guard(CLOUD, "listGpuTypes", self.name):
            return [
                offer
                for gpu in catalog.gpus
                for offer in self._offers_of(gpu, capacity_type, count)
            ]

    async def _fetch_catalog(self, count: int) -> models_v2.ListGpuTypesResponse:
        return await self._v2.call(
            operations_v2.list_gpu_types,
            include=["AVAILABILITY"],
            product=["POD"],
            cloud=self._cloud_type,
            count=count,
        )

    def _offers_of(
        self, gpu: models_v2.GpuType, capacity_type: CapacityType, count: int | None
    ) -> list[Offer]:
        secure = self._cloud_type == "SECURE"
        gpu_type = self._names.gpu(gpu.id)
        per_gpu = self._price(gpu, capacity_type)
        max_count = gpu.max_count.secure if secure else gpu.max_count.community
        if gpu_type is None or per_gpu is None or not (gpu.secure if secure else gpu.community):
            return []
        counts = [count] if count else list(range(1, max_count + 1))
        offers = []
        for centre in gpu.data_centers or []:
            region = self._names.region(centre.id)
            if region is None:
                continue
            offers += [
                Offer(
                    provider=self.name,
                    cloud=CLOUD,
                    region=region,
                    native_region=centre.id,
                    gpu_type=gpu_type,
                    gpu_count=n,
                    instance_type=gpu.id,
                    capacity_type=capacity_type,
                    price_per_hour=per_gpu * n,
                    available=centre.availability != "NONE",
                )
                for n in counts
                if 1 <= n <= max_count
            ]
        return offers

    def _price(self, gpu: models_v2.GpuType, capacity_type: CapacityType) -> Decimal | None:
        """USD per GPU-hour: the override, else the catalog (spot: an estimate)."""
        prices = self._config.prices
        if capacity_type is CapacityType.SPOT:
            if f"spot:{gpu.id}" in prices:
                return prices[f"spot:{gpu.id}"]
            community = usd(gpu.price.community)
            return None if community is None else community * self._spot_factor
        if gpu.id in prices:
            return prices[gpu.id]
        return usd(gpu.price.secure if self._cloud_type == "SECURE" else gpu.price.community)

    # -- instances -------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Instance:
        self._create_body(request)  # refuse a request the cloud would refuse, before looking
        return await errors.launch_or_recover(
            request.name, self.find_all, lambda: self.create(request)
        )

    async def create(self, request: LaunchRequest) -> Instance:
        body = self._create_body(request)
        pod = await errors.create_once(self._v1.call(operations_v1.create_pod, body))
        region = (body.data_center_ids or [""])[0]
        with errors.create_guard(CLOUD, CREATE, self.name):
            return _instance(pod, region)

    def _create_body(self, request: LaunchRequest) -> models_v1.PodCreateInput:
        if len(request.name) > MAX_NAME:
            raise InvalidRequestError(
                f"runpod: pod name longer than {MAX_NAME}: {request.name!r}", provider=self.name
            )
        options, offer = self._config.options, request.offer
        if not (options.get("imageName") or options.get("templateId")):
            raise InvalidRequestError(
                "runpod: set imageName (or templateId): a pod is a container that needs one",
                provider=self.name,
            )
        ports = [p.strip() for p in options.get("ports", "").split(",") if p.strip()]
        return models_v1.PodCreateInput(
            name=request.name,
            gpu_type_ids=[offer.instance_type],
            gpu_count=offer.gpu_count,
            data_center_ids=[offer.native_region],
            cloud_type=self._cloud_type,
            interruptible=offer.capacity_type is CapacityType.SPOT,
            image_name=options.get("imageName") or None,
            template_id=options.get("templateId") or None,
            env=dict(request.join.env),
            # The pod's start command runs the join script in the container (bash -c);
            # the same variables are in its env for images that join by themselves.
            docker_start_cmd=["bash", "-c", request.join.script] if request.join.script else None,
            ports=ports or None,
            container_disk_in_gb=self._container_disk,
            volume_in_gb=self._volume,
        )

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        """`since` given: served from the shared list of every pod (`Snapshots`)."""
        return await self._snapshots.look(instance_id, since, listed_by)

    async def _get(self, instance_id: str) -> Instance:
        pod = await self._v1.call(operations_v1.get_pod, instance_id, include_machine=True)
        with errors.structure_guard(CLOUD, "GetPod", self.name):
            return _instance(pod)

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        if since is not None:
            return await self._snapshots.find_all(name, since)
        return errors.preferred(i for i in await self._list(name=name) if i.name == name)

    async def find(self, name: str) -> Instance | None:
        found = await self.find_all(name)
        return found[0] if found else None

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        pods = await self._snapshots.list_every()  # a snapshot too
        return [i for i in _live(pods) if i.name.startswith(name_prefix)]

    async def _list(self, name: str | None = None) -> list[Instance]:
        return _live(await self._pods(name))

    async def _pods(self, name: str | None = None) -> list[Instance]:
        """Every pod (named `name`, when given) in every state the cloud lists."""
        pods = await self._v1.call(operations_v1.list_pods, name=name, include_machine=True)
        with errors.structure_guard(CLOUD, "ListPods", self.name):
            return [_instance(p) for p in pods]

    async def terminate(self, instance_id: str) -> None:
        """DELETE the pod, once per poll (`errors.TerminateLog`).

        RunPod's spec answers 400 "Invalid Pod ID" (not 404) for a pod it does not know,
        and 400 may mean other things too: a 400 or a 404 is confirmed with a GET, and
        only a pod the GET does not find (or finds terminated) counts as gone.
        """
        if not self._terminations.due(instance_id):
            return
        try:
            await self._v1.call(operations_v1.delete_pod, instance_id)
        except (NotFoundError, InvalidRequestError) as err:
            if not await self._gone(instance_id):
                raise err
            self._terminations.gone(instance_id)
            self._snapshots.gone(instance_id)
            return
        self._terminations.accepted(instance_id)
        self._snapshots.terminated(instance_id)

    async def _gone(self, instance_id: str) -> bool:
        try:
            pod = await self._get(instance_id)
        except NotFoundError:
            return True
        return pod.state is InstanceState.TERMINATED

    async def cleanup(self, name: str) -> None:
        """RunPod keeps nothing per pod besides the pod (its volume goes with it)."""

    async def validate_credentials(self) -> None:
        # The list every pod a look wants anyway, kept as a snapshot: under RunPod's 60
        # calls a minute a restarted operator's check is not a call spent for nothing.
        await self._snapshots.list_every()

    async def close(self) -> None:
        """Nothing to release: the aiohttp session belongs to the caller."""


def _live(pods: list[Instance]) -> list[Instance]:
    return [i for i in pods if i.id and i.state is not InstanceState.TERMINATED]


def _instance(pod: models_v1.Pod, region: str = "") -> Instance:
    status = pod.desired_status or ""
    state = STATES.get(status, InstanceState.UNKNOWN)
    if state is InstanceState.STOPPED and pod.interruptible:
        state = InstanceState.PREEMPTED
    machine = pod.machine
    return Instance(
        id=pod.id or "",
        name=pod.name or "",
        state=state,
        native_state=status,
        region=(machine.data_center_id if machine else None) or region,
        instance_type=(pod.gpu.id if pod.gpu else None) or "",
        capacity_type=CapacityType.SPOT if pod.interruptible else CapacityType.ON_DEMAND,
        public_ip=pod.public_ip,
        price_per_hour=usd(pod.cost_per_hr) if pod.cost_per_hr is not None else None,
        launched_at=_timestamp(pod.last_started_at),
    )


def _timestamp(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _gigabytes(options: Mapping[str, str], key: str, *, minimum: int) -> int | None:
    """An optional whole number of GB >= `minimum`; unset: RunPod's default."""
    text = options.get(key)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise InvalidRequestError(
            f"runpod: {key} must be a whole number >= {minimum}, not {text!r}"
        )
    return value


def _factor(text: str | None) -> Decimal:
    if text is None:
        return DEFAULT_SPOT_FACTOR
    factor = usd(text)
    if factor is None or not 0 < factor <= 1:
        raise InvalidRequestError(f"runpod: spotPriceFactor must be in (0, 1], not {text!r}")
    return factor
