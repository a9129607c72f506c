"""Simulated Lambda Cloud API (spec: Lambda Cloud API 1.10.0), served under /api/v1.

Operations: GET instance-types, GET regions, POST instance-operations/launch,
POST instance-operations/terminate, GET instances, GET instances/{id},
GET ssh-keys. Semantics as Lambda documents them:
- auth: `Authorization: Bearer <key>`, or Basic with the key (base64 `key:` or raw);
- launch: on-demand only, one instance, exactly one existing SSH key name,
  `user_data` at most 1 MiB; answers `{"data": {"instance_ids": [id]}}`;
  no capacity -> 400 `instance-operations/launch/insufficient-capacity`;
- status: booting -> active; terminate -> terminating -> terminated; spot
  interruptions (only by `Simulator.state.interrupt`, Lambda sells no spot) ->
  preempted. `ip` appears once active. GET /instances lists every instance not
  yet terminated; GET /instances/{id} still answers a terminated one.
- errors: `{"error": {"code", "message", "suggestion"?}}`. Lambda documents no
  429 or 5xx body; the sim uses `global/too-many-requests` and
  `global/internal-error` in the same envelope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import string
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDictProxy

from gpuctl.sim.config import SimConfig
from gpuctl.sim.model import Phase, SimInstance
from gpuctl.sim.server import ApiError, Call, CloudApi, Reply, Route
from gpuctl.sim.specs import Spec, spec
from gpuctl.sim.state import NoCapacityError, SimState

MAX_USER_DATA_BYTES = 1024 * 1024

_STATUS = {
    Phase.BOOTING: "booting",
    Phase.RUNNING: "active",
    Phase.STOPPED: "unhealthy",  # Lambda cannot stop an instance; never reached there
    Phase.TERMINATING: "terminating",
    Phase.TERMINATED: "terminated",
    Phase.PREEMPTED: "preempted",
}


def native_state(instance: SimInstance, now: float) -> str:
    return _STATUS[instance.phase]


def _error(status: int, code: str, message: str, suggestion: str | None = None) -> Reply:
    error = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return Reply(status, {"error": error})


class LambdaApi(CloudApi):
    cloud = "lambda"

    def __init__(self, state: SimState, config: SimConfig) -> None:
        super().__init__(state, config)
        self.spec = spec("lambda")

    def spec_for(self, path: str) -> Spec:
        return self.spec

    def routes(self) -> Sequence[Route]:
        return [
            Route("GET", self.spec, "/api/v1/instance-types", self.list_instance_types),
            Route("GET", self.spec, "/api/v1/regions", self.list_regions),
            Route("POST", self.spec, "/api/v1/instance-operations/launch", self.launch),
            Route("POST", self.spec, "/api/v1/instance-operations/terminate", self.terminate),
            Route("GET", self.spec, "/api/v1/instances", self.list_instances),
            Route("GET", self.spec, "/api/v1/instances/{id}", self.get_instance),
            Route("GET", self.spec, "/api/v1/ssh-keys", self.list_ssh_keys),
        ]

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        scheme, _, credentials = headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer":
            return credentials == self.api_key
        if scheme == "Basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            return self.api_key in (credentials, decoded.removesuffix(":"))
        return False

    # -- errors ---------------------------------------------------------------------

    def unauthorized(self) -> Reply:
        return _error(
            401,
            "global/invalid-api-key",
            "API key was invalid, expired, or deleted.",
            "Check your API key or create a new one, then try again.",
        )

    def not_found(self, message: str) -> Reply:
        return _error(404, "global/not-found", "The requested resource was not found.", message)

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        return _error(
            400, "global/invalid-parameters", "Invalid request data.", "; ".join(problems)
        )

    def internal_error(self) -> Reply:
        return _error(
            500,
            "global/internal-error",
            "An internal server error occurred.",
            "Try again later. Contact Support if the problem persists.",
        )

    def rate_limited(self, retry_after: int) -> Reply:
        reply = _error(429, "global/too-many-requests", "Too many requests.", "Slow down.")
        return Reply(reply.status, reply.body, headers={"Retry-After": str(retry_after)})

    def error_model_problems(self, reply: Reply) -> list[str]:
        body = reply.body
        if not isinstance(body, dict) or set(body) != {"error"}:
            return ['the body must be {"error": {...}} and nothing else']
        error = body["error"]
        if not isinstance(error, dict):
            return ["error must be an object"]
        problems = [
            f"error.{k} must be a string"
            for k in ("code", "message")
            if not isinstance(error.get(k), str)
        ]
        if "suggestion" in error and not isinstance(error["suggestion"], str):
            problems.append("error.suggestion must be a string")
        return problems

    # -- operations -----------------------------------------------------------------

    def list_instance_types(self, call: Call) -> Reply:
        cloud = self.state.cloud(self.cloud)
        data = {}
        for name in cloud.catalog.types:
            data[name] = {
                "instance_type": self._type_json(name),
                "regions_with_capacity_available": [
                    self._region_json(region)
                    for region in cloud.catalog.regions
                    if cloud.free(region, name) > 0
                ],
            }
        return Reply(200, {"data": data})

    def list_regions(self, call: Call) -> Reply:
        regions = self.state.cloud(self.cloud).catalog.regions
        return Reply(200, {"data": [self._region_json(name) for name in regions]})

    def list_ssh_keys(self, call: Call) -> Reply:
        keys = self.state.cloud(self.cloud).catalog.ssh_keys
        return Reply(200, {"data": [_ssh_key_json(name) for name in keys]})

    def launch(self, call: Call) -> Reply:
        body: dict[str, Any] = call.body
        cloud = self.state.cloud(self.cloud)
        region, type_name = body["region_name"], body["instance_type_name"]
        self._check_launch(body)
        price = cloud.price(type_name)
        assert price is not None
        shape = cloud.catalog.types[type_name]
        instance_id = cloud.new_id(32, string.hexdigits[:16])
        try:
            self.state.launch(
                self.cloud,
                instance_id=instance_id,
                name=body.get("name", ""),
                instance_type=type_name,
                region=region,
                gpu_count=shape.gpu_count,
                vcpus=shape.vcpus,
                memory_gib=shape.memory_gib,
                units=1,
                spot=False,
                price_per_hour=price,
                join_script=body.get("user_data", ""),
                request=body,
            )
        except NoCapacityError:
            raise ApiError(
                _error(
                    400,
                    "instance-operations/launch/insufficient-capacity",
                    "Not enough capacity to fulfill launch request.",
                    "Choose a different region or instance type, or try again later.",
                )
            ) from None
        return Reply(200, {"data": {"instance_ids": [instance_id]}})

    def _check_launch(self, body: dict[str, Any]) -> None:
        catalog = self.state.cloud(self.cloud).catalog
        keys = body["ssh_key_names"]
        if len(keys) != 1:
            raise ApiError(_invalid("Exactly one SSH key name must be specified."))
        if keys[0] not in catalog.ssh_keys:
            raise ApiError(
                _error(
                    404,
                    "global/object-does-not-exist",
                    f"SSH key {keys[0]!r} does not exist.",
                    "Check the name with GET /api/v1/ssh-keys.",
                )
            )
        if body["region_name"] not in catalog.regions:
            raise ApiError(_invalid(f"Unknown region {body['region_name']!r}."))
        if body["instance_type_name"] not in catalog.types:
            raise ApiError(_invalid(f"Unknown instance type {body['instance_type_name']!r}."))
        if len(body.get("user_data", "").encode()) > MAX_USER_DATA_BYTES:
            raise ApiError(_invalid("user_data must not exceed 1 MB."))

    def terminate(self, call: Call) -> Reply:
        cloud = self.state.cloud(self.cloud)
        instances = []
        for instance_id in call.body["instance_ids"]:
            instance = cloud.instances.get(instance_id)
            if instance is None or instance.phase is Phase.TERMINATED:
                raise ApiError(_instance_not_found())
            instances.append(instance)
        for instance in instances:
            self.state.terminate(instance)
        terminated = [self._instance_json(i) for i in instances]
        return Reply(200, {"data": {"terminated_instances": terminated}})

    def list_instances(self, call: Call) -> Reply:
        live = self.state.cloud(self.cloud).listed(self.state.clock.now())
        return Reply(200, {"data": [self._instance_json(i) for i in live]})

    def get_instance(self, call: Call) -> Reply:
        instance = self.state.cloud(self.cloud).instances.get(call.path_params["id"])
        if instance is None:
            raise ApiError(_instance_not_found())
        return Reply(200, {"data": self._instance_json(instance)})

    # -- shapes ---------------------------------------------------------------------

    def _type_json(self, name: str) -> dict[str, Any]:
        cloud = self.state.cloud(self.cloud)
        machine = cloud.catalog.types[name]
        price = cloud.price(name) or 0.0
        return {
            "name": name,
            "description": f"{machine.gpu_count}x {machine.gpu_name}",
            "gpu_description": machine.gpu_name,
            "price_cents_per_hour": round(price * 100),
            "specs": {
                "vcpus": machine.vcpus,
                "memory_gib": machine.memory_gib,
                "storage_gib": machine.storage_gib,
                "gpus": machine.gpu_count,
            },
        }

    def _region_json(self, name: str) -> dict[str, str]:
        region = self.state.cloud(self.cloud).catalog.regions[name]
        return {"name": name, "description": region.description}

    def _instance_json(self, instance: SimInstance) -> dict[str, Any]:
        request = instance.request
        data: dict[str, Any] = {
            "id": instance.id,
            "status": _STATUS[instance.phase],
            "ssh_key_names": list(request.get("ssh_key_names", [])),
            "file_system_names": list(request.get("file_system_names", [])),
            "region": self._region_json(instance.region),
            "instance_type": self._type_json(instance.instance_type),
            "actions": _actions(instance.phase),
            "tags": [dict(t) for t in request.get("tags", [])],
        }
        if instance.name:
            data["name"] = instance.name
        if "hostname" in request:
            data["hostname"] = request["hostname"]
        if instance.running_at is not None and instance.phase in (Phase.RUNNING, Phase.TERMINATING):
            data["ip"] = instance.public_ip
            data["private_ip"] = instance.private_ip
        return data


def _invalid(message: str) -> Reply:
    return _error(400, "global/invalid-parameters", message)


def _instance_not_found() -> Reply:
    return _error(404, "global/object-does-not-exist", "Specified instance does not exist.")


def _ssh_key_json(name: str) -> dict[str, str]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    material = base64.b64encode(hashlib.sha512(name.encode()).digest()[:51]).decode()
    return {"id": digest[:32], "name": name, "public_key": f"ssh-ed25519 AAAAC3{material} {name}"}


def _actions(phase: Phase) -> dict[str, dict[str, Any]]:
    if phase is Phase.BOOTING:
        reason = ("vm-has-not-launched", "The instance has not launched yet.")
    elif phase in (Phase.TERMINATING, Phase.TERMINATED, Phase.PREEMPTED):
        reason = ("vm-is-terminating", "The instance is terminating or terminated.")
    else:
        reason = None
    unavailable: dict[str, Any] = {"available": False}
    if reason:
        unavailable = {
            "available": False,
            "reason_code": reason[0],
            "reason_description": reason[1],
        }
    running = {"available": True} if reason is None else unavailable
    can_terminate = phase not in (Phase.TERMINATING, Phase.TERMINATED)
    return {
        "migrate": unavailable if reason else {"available": False},
        "rebuild": running,
        "restart": running,
        "cold_reboot": running,
        "terminate": {"available": True} if can_terminate else unavailable,
    }
