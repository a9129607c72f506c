"""Simulated Hyperstack Infrahub API (spec: "Infrahub-API" 1.0, SDK v1.52.3-alpha), under /v1.

Operations (those gpuctl uses; the shipped spec is pruned to them): GET /core/flavors,
GET /core/stocks, GET /pricebook, GET/POST /core/environments, GET/POST /core/keypairs,
GET/POST /core/virtual-machines, GET/DELETE /core/virtual-machines/{vm_id}.
Semantics as Hyperstack documents them:
- auth: the key in an `api_key` header; anything else is 401.
- environments: `{name, region}`, names unique (409 otherwise), the region one of the
  catalogue's. Key pairs belong to an environment (`{name, environment_name,
  public_key}`, unique per environment).
- flavors: grouped by (GPU, region); `stock_available` is true while the flavor has free
  capacity there. `/core/stocks` counts free VMs per region and GPU model for each
  configuration (1x, 2x, 4x, 8x, 10x). `/pricebook` lists one hourly rate per GPU model
  (per GPU-hour: the catalogue's flavor price over its GPU count).
- create: `count` 1 only (gpuctl creates one VM at a time; more is refused), the
  environment, flavor (offered in the environment's region), key pair (in that
  environment) and image must exist; `user_data` is cloud-init user data the VM runs at
  its first boot. No capacity -> 400 "Not enough stock ...". Answers the created VM.
  Security rules sent with the create are kept on the VM.
- VMs: integer ids; status CREATING for the first half of the boot, then BUILD, ACTIVE
  once running (with `floating_ip` when `assign_floating_ip`), SHUTOFF when stopped,
  DELETING after DELETE for `terminate_seconds`, then gone (404, not listed). A failed
  provisioning (`SimState.fail_next_boots`) is status ERROR.
- GET /core/virtual-machines: `search` is a case-insensitive substring of the name,
  `environment` an environment name; `page` (from 1) and `pageSize` (default 20).
- errors: `{status: false, message, error_reason}` (ErrorResponseModel). The spec gives
  500 no body: the sim answers it empty. A 429 (rate limit) has the same body and, as
  Hyperstack documents none, no Retry-After.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDictProxy

from gpuctl.sim.clock import iso8601
from gpuctl.sim.config import SimConfig
from gpuctl.sim.model import Phase, SimInstance
from gpuctl.sim.server import ApiError, Call, CloudApi, Reply, Route
from gpuctl.sim.specs import Spec, spec
from gpuctl.sim.state import CloudState, NoCapacityError, SimState

ENVIRONMENTS = "environments"
KEYPAIRS = "keypairs"
IMAGES = ("Ubuntu Server 22.04 LTS R535 CUDA 12.2", "Ubuntu Server 24.04 LTS R570 CUDA 12.8")
PAGE_SIZE = 20
CONFIGURATIONS = (1, 2, 4, 8, 10)
FIRST_VM_ID = 200_000
ACCOUNT_CREATED = datetime.datetime(2024, 1, 15, 12, tzinfo=datetime.UTC).timestamp()


def native_state(instance: SimInstance, now: float) -> str:
    if instance.phase is Phase.BOOTING:
        if instance.running_at is None:  # a failed provisioning
            return "ERROR"
        halfway = instance.phase_since + (instance.running_at - instance.phase_since) / 2
        return "CREATING" if now < halfway else "BUILD"
    return {
        Phase.RUNNING: "ACTIVE",
        Phase.STOPPED: "SHUTOFF",
        Phase.PREEMPTED: "SHUTOFF",  # Hyperstack sells no spot: only by hand
        Phase.TERMINATING: "DELETING",
        Phase.TERMINATED: "DELETED",
    }[instance.phase]


def _error(status: int, message: str, reason: str) -> Reply:
    return Reply(status, {"status": False, "message": message, "error_reason": reason})


class HyperstackApi(CloudApi):
    cloud = "hyperstack"

    def __init__(self, state: SimState, config: SimConfig) -> None:
        super().__init__(state, config)
        self.spec = spec("hyperstack")

    def spec_for(self, path: str) -> Spec:
        return self.spec

    def routes(self) -> Sequence[Route]:
        s, vms = self.spec, "/core/virtual-machines"
        return [
            Route("GET", s, "/core/flavors", self.list_flavors),
            Route("GET", s, "/core/stocks", self.stocks),
            Route("GET", s, "/pricebook", self.pricebook),
            Route("GET", s, "/core/environments", self.list_environments),
            Route("POST", s, "/core/environments", self.create_environment),
            Route("GET", s, "/core/keypairs", self.list_keypairs),
            Route("POST", s, "/core/keypairs", self.import_keypair),
            Route("POST", s, vms, self.create_vms),
            Route("GET", s, vms, self.list_vms),
            Route("GET", s, vms + "/{vm_id}", self.get_vm),
            Route("DELETE", s, vms + "/{vm_id}", self.delete_vm),
        ]

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        return headers.get("api_key", "") == self.api_key

    @property
    def _cloud(self) -> CloudState:
        return self.state.cloud(self.cloud)

    def _objects(self, kind: str) -> dict[str, dict[str, Any]]:
        return self._cloud.objects.setdefault(kind, {})

    # -- errors ---------------------------------------------------------------------

    def unauthorized(self) -> Reply:
        return _error(401, "Invalid API key or access token", "Unauthorized")

    def not_found(self, message: str) -> Reply:
        return _error(404, message, "Not Found")

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        return _error(400, "; ".join(problems), "Bad Request")

    def internal_error(self) -> Reply:
        return Reply(500, None)

    def rate_limited(self, retry_after: int) -> Reply:
        return _error(429, "Too many requests: rate limit exceeded", "Too Many Requests")

    def error_model_problems(self, reply: Reply) -> list[str]:
        body = reply.body
        if reply.status == 500 and body is None:
            return []
        if not isinstance(body, dict) or not set(body) <= {"status", "message", "error_reason"}:
            return ["errors must be {status, message, error_reason?}"]
        problems = [
            f"{k} must be a string" for k in ("message",) if not isinstance(body.get(k), str)
        ]
        if body.get("status") is not False:
            problems.append("status must be false")
        return problems

    # -- catalogue ------------------------------------------------------------------

    def list_flavors(self, call: Call) -> Reply:
        cloud, wanted = self._cloud, call.query.get("region")
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for region in cloud.catalog.regions:
            if wanted is not None and region != wanted:
                continue
            for name, machine in cloud.catalog.types.items():
                flavor = self._flavor_json(name, region)
                groups.setdefault((machine.gpu_name, region), []).append(flavor)
        data = [
            {"gpu": gpu, "region_name": region, "flavors": flavors}
            for (gpu, region), flavors in groups.items()
        ]
        return Reply(200, {"status": True, "message": "Success", "data": data})

    def stocks(self, call: Call) -> Reply:
        cloud = self._cloud
        stocks = []
        for region in cloud.catalog.regions:
            models: dict[str, dict[str, int]] = {}
            for name, machine in cloud.catalog.types.items():
                counts = models.setdefault(machine.gpu_name, {})
                counts[f"{machine.gpu_count}x"] = cloud.free(region, name)
            stocks.append(
                {
                    "region": region,
                    "stock-type": "GPU",
                    "models": [
                        {
                            "model": model,
                            "available": str(sum(counts.values())),
                            "planned_7_days": "0",
                            "planned_30_days": "0",
                            "planned_100_days": "0",
                            "configurations": {
                                f"{n}x": counts.get(f"{n}x", 0) for n in CONFIGURATIONS
                            },
                        }
                        for model, counts in models.items()
                    ],
                }
            )
        return Reply(200, {"stocks": stocks})

    def pricebook(self, call: Call) -> Reply:
        cloud, seen = self._cloud, set()
        entries: list[dict[str, Any]] = []
        start = iso8601(ACCOUNT_CREATED)
        for name, machine in sorted(cloud.catalog.types.items(), key=lambda t: t[1].gpu_count):
            if machine.gpu_name in seen:
                continue
            seen.add(machine.gpu_name)
            rate = round((cloud.price(name) or 0.0) / machine.gpu_count, 4)
            entries.append(
                {
                    "id": len(entries) + 1,
                    "name": machine.gpu_name,
                    "value": rate,
                    "original_value": rate,
                    "discount_applied": False,
                    "start_time": start,
                }
            )
        return Reply(200, entries)

    # -- environments and key pairs -----------------------------------------------------

    def list_environments(self, call: Call) -> Reply:
        found = [
            e
            for e in self._objects(ENVIRONMENTS).values()
            if _matches(call.query.get("search"), e["name"], e["region"], str(e["id"]))
        ]
        page, size, items = _page(found, call)
        return Reply(
            200,
            {
                "status": True,
                "message": "Success",
                "environments": items,
                "page": page,
                "page_size": size,
                "count": len(found),
            },
        )

    def create_environment(self, call: Call) -> Reply:
        name, region = call.body["name"], call.body["region"]
        environments = self._objects(ENVIRONMENTS)
        if any(e["name"] == name for e in environments.values()):
            raise ApiError(_error(409, f"Environment {name} already exists", "Conflict"))
        if region not in self._cloud.catalog.regions:
            raise ApiError(_error(400, f"Region {region} does not exist", "Bad Request"))
        environment = {
            "id": len(environments) + 1,
            "name": name,
            "region": region,
            "created_at": iso8601(self.state.clock.now()),
            "features": {"network_optimised": False, "green_status": "NOT_GREEN"},
        }
        environments[name] = environment
        return Reply(
            200, {"status": True, "message": "Environment created", "environment": environment}
        )

    def list_keypairs(self, call: Call) -> Reply:
        found = [
            k
            for k in self._objects(KEYPAIRS).values()
            if _matches(call.query.get("search"), k["name"], k["environment"]["name"])
        ]
        page, size, items = _page(found, call)
        body = {"status": True, "message": "Success", "keypairs": items}
        return Reply(200, {**body, "page": page, "page_size": size, "count": len(found)})

    def import_keypair(self, call: Call) -> Reply:
        body = call.body
        environment = self._objects(ENVIRONMENTS).get(body["environment_name"])
        if environment is None:
            raise ApiError(self.not_found(f"Environment {body['environment_name']} not found"))
        keypairs = self._objects(KEYPAIRS)
        key = f"{environment['name']}/{body['name']}"
        if key in keypairs:
            raise ApiError(_error(409, f"Key pair {body['name']} already exists", "Conflict"))
        keypairs[key] = {
            "id": len(keypairs) + 1,
            "name": body["name"],
            "environment": {
                "id": environment["id"],
                "name": environment["name"],
                "region": environment["region"],
                "features": environment["features"],
            },
            "public_key": body["public_key"],
            "fingerprint": "SHA256:" + hashlib.sha256(body["public_key"].encode()).hexdigest()[:43],
            "created_at": iso8601(self.state.clock.now()),
        }
        return Reply(
            200, {"status": True, "message": "Key pair imported", "keypair": keypairs[key]}
        )

    # -- virtual machines -------------------------------------------------------------

    def create_vms(self, call: Call) -> Reply:
        body: dict[str, Any] = call.body
        environment, flavor = self._check_create(body)
        cloud = self._cloud
        machine = cloud.catalog.types[flavor]
        region = environment["region"]
        vm_id = str(FIRST_VM_ID + len(cloud.instances) + 1)
        try:
            instance = self.state.launch(
                self.cloud,
                instance_id=vm_id,
                name=body["name"],
                instance_type=flavor,
                region=region,
                gpu_count=machine.gpu_count,
                vcpus=machine.vcpus,
                memory_gib=machine.memory_gib,
                units=1,
                spot=False,
                price_per_hour=cloud.price(flavor) or 0.0,
                join_script=body.get("user_data", ""),
                request=body,
            )
        except NoCapacityError:
            raise ApiError(
                _error(
                    400,
                    f"Not enough stock available for flavor {flavor} in {region}",
                    "Bad Request",
                )
            ) from None
        return Reply(
            200,
            {
                "status": True,
                "message": "Creating 1 virtual machine(s)",
                "instances": [self._vm_json(instance)],
            },
        )

    def _check_create(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if body["count"] != 1:
            raise ApiError(
                _error(400, "The simulated cloud creates one VM per request", "Bad Request")
            )
        environment = self._objects(ENVIRONMENTS).get(body["environment_name"])
        if environment is None:
            raise ApiError(self.not_found(f"Environment {body['environment_name']} not found"))
        flavor = body["flavor_name"]
        if flavor not in self._cloud.catalog.types:
            raise ApiError(self.not_found(f"Flavor {flavor} not found"))
        if f"{environment['name']}/{body['key_name']}" not in self._objects(KEYPAIRS):
            raise ApiError(self.not_found(f"Key pair {body['key_name']} not found in environment"))
        if body.get("image_name", IMAGES[0]) not in IMAGES:
            raise ApiError(self.not_found(f"Image {body['image_name']} not found"))
        return environment, flavor

    def list_vms(self, call: Call) -> Reply:
        now = self.state.clock.now()
        wanted = call.query.get("environment")
        found = [
            i
            for i in self._cloud.listed(now)
            if _matches(call.query.get("search"), i.name)
            and (wanted is None or self._environment_of(i) == wanted)
        ]
        page, size, items = _page(found, call)
        return Reply(
            200,
            {
                "status": True,
                "message": "Success",
                "instances": [self._vm_json(i) for i in items],
                "page": page,
                "page_size": size,
                "count": len(found),
            },
        )

    def get_vm(self, call: Call) -> Reply:
        instance = self._vm(call.path_params["vm_id"])
        return Reply(
            200, {"status": True, "message": "Success", "instance": self._vm_json(instance)}
        )

    def delete_vm(self, call: Call) -> Reply:
        instance = self._vm(call.path_params["vm_id"])
        self.state.terminate(instance)
        return Reply(200, {"status": True, "message": "Deleting the virtual machine"})

    def _vm(self, vm_id: str) -> SimInstance:
        instance = self._cloud.instances.get(vm_id)
        if instance is None or instance.phase is Phase.TERMINATED:
            raise ApiError(self.not_found(f"Virtual machine {vm_id} not found"))
        return instance

    # -- shapes -------------------------------------------------------------------------

    def _environment_of(self, instance: SimInstance) -> str:
        return str(instance.request.get("environment_name", ""))

    def _flavor_json(self, name: str, region: str) -> dict[str, Any]:
        cloud = self._cloud
        machine = cloud.catalog.types[name]
        return {
            "id": list(cloud.catalog.types).index(name) + 1,
            "name": name,
            "display_name": name,
            "region_name": region,
            "cpu": machine.vcpus,
            "ram": float(machine.memory_gib),
            "disk": machine.storage_gib,
            "ephemeral": 0,
            "gpu": machine.gpu_name,
            "gpu_count": machine.gpu_count,
            "stock_available": cloud.free(region, name) > 0,
            "created_at": iso8601(ACCOUNT_CREATED),
            "features": {},
            "labels": [],
        }

    def _vm_json(self, instance: SimInstance) -> dict[str, Any]:
        request = instance.request
        environment = self._objects(ENVIRONMENTS).get(self._environment_of(instance), {})
        machine = self._cloud.catalog.types[instance.instance_type]
        running = instance.phase in (Phase.RUNNING, Phase.TERMINATING)
        public = running and request.get("assign_floating_ip") is True
        rules = [
            {**rule, "id": n, "status": "SUCCESS", "created_at": iso8601(instance.created_at)}
            for n, rule in enumerate(request.get("security_rules", []), 1)
        ]
        status = native_state(instance, self.state.clock.now())
        return {
            "id": int(instance.id),
            "name": instance.name,
            "status": status,
            "vm_state": status.lower() if status in ("ACTIVE", "ERROR") else "building",
            "power_state": "RUNNING" if instance.phase is Phase.RUNNING else "NOSTATE",
            "environment": {
                "id": environment.get("id", 0),
                "name": self._environment_of(instance),
                "region": instance.region,
                "org_id": 1,
                "features": environment.get("features", {}),
            },
            "flavor": {
                "id": list(self._cloud.catalog.types).index(instance.instance_type) + 1,
                "name": instance.instance_type,
                "cpu": machine.vcpus,
                "ram": float(machine.memory_gib),
                "disk": machine.storage_gib,
                "ephemeral": 0,
                "gpu": machine.gpu_name,
                "gpu_count": machine.gpu_count,
                "features": {},
                "labels": [],
            },
            "image": {"name": request.get("image_name", IMAGES[0])},
            "keypair": {"name": request.get("key_name", "")},
            "fixed_ip": instance.private_ip or "",
            "floating_ip": instance.public_ip if public else "",
            "floating_ip_status": "ATTACHED" if public else "NOT_ATTACHED",
            "labels": list(request.get("labels", [])),
            "security_rules": rules,
            "locked": False,
            "os": "Ubuntu 22.04",
            "requires_public_ip": bool(request.get("assign_floating_ip")),
            "created_at": iso8601(instance.created_at),
            "callback_url": request.get("callback_url", ""),
            "contract_id": 0,
            "port_randomization": False,
            "port_randomization_status": "DISABLED",
            "features": {},
            "volume_attachments": [],
        }


def _matches(search: str | None, *values: str) -> bool:
    return search is None or any(search.lower() in v.lower() for v in values)


def _page(items: list[Any], call: Call) -> tuple[int, int, list[Any]]:
    page = _positive(call.query.get("page"), 1)
    size = _positive(call.query.get("pageSize"), PAGE_SIZE)
    return page, size, items[(page - 1) * size : page * size]


def _positive(text: str | None, default: int) -> int:
    if text is None or not text.isdigit() or int(text) < 1:
        return default
    return int(text)
