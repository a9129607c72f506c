"""Simulated RunPod: REST v1 pods (`/v1/pods...`), REST v2 catalog and pods (`/v2/...`).

Both APIs answer on one port, each validated against its own spec, over the
same pods: a pod created through v1 is visible through v2 and vice versa.

- POST /v1/pods (`PodCreateInput`): GPU pods only. Candidates are every
  (gpuTypeIds x dataCenterIds, default: all data centres) pair whose type allows
  `gpuCount`; `gpuTypePriority`/`dataCenterPriority` "custom" keeps the given
  order, "availability" (the default) prefers the most free GPUs. The first pair
  with `gpuCount` free GPUs wins; none -> 400 problem+json "There are no
  instances available ...". `interruptible: true` makes a spot pod charged
  `spot_factor` x the community price; `cloudType` COMMUNITY the community
  price, SECURE (default) the secure price; `costPerHr` = price x gpuCount.
- desiredStatus: RUNNING from creation (the container is up once `publicIp`
  and `portMappings` appear), EXITED when stopped or interrupted, TERMINATED
  while a delete completes; afterwards the pod is gone (404). The data centre is
  only visible as `machine.dataCenterId` with `includeMachine=true`, as in the
  real API. DELETE, stop and start of a pod the cloud does not know (or no longer:
  terminated) answer 400 "Invalid Pod ID." as the v1 spec documents (it lists no 404
  for them); GET answers 404.
- v2 pods (GET /v2/pods, GET/DELETE /v2/pods/{id}, POST /v2/pods/{id}/action)
  report v2's `status`: PROVISIONING (first half of the boot), STARTING,
  RUNNING, EXITED (stopped or interrupted), TERMINATED (while a delete
  completes); `actions` lists what the status allows and any other action gets
  409. Pods are created through v1 only (v2 has no spot field).
- GET /v2/catalog/gpus: per-GPU-hour secure/community prices and `maxCount`;
  `include=AVAILABILITY` (needs `product`) adds availability per data centre
  for `count` GPUs: NONE (not one pod fits), LOW (1), MEDIUM (2-3), HIGH (4+).
- Errors are `application/problem+json` (`title`, `status`, `detail`,
  `errors[]`): invalid requests 400 (v1) / 422 (v2). Every authenticated answer
  carries `RateLimit` and `RateLimit-Policy` (60/min, 3000/h, 50000/day);
  with `enforce_rate_limits` the 61st request of a minute gets 429.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gpuctl.sim.clock import iso8601
from gpuctl.sim.config import SimConfig
from gpuctl.sim.model import Phase, SimInstance
from gpuctl.sim.server import ApiError, Call, CloudApi, Reply, Route
from gpuctl.sim.specs import Spec, spec
from gpuctl.sim.state import CloudState, InvalidTransitionError, NoCapacityError, SimState

PROBLEM = "application/problem+json"
# (window name, quota, window seconds), as RunPod's docs give them.
RATE_POLICY = (("minute", 60, 60), ("hour", 3000, 3600), ("day", 50000, 86400))
DEFAULT_PORTS = ["8888/http", "22/tcp"]

_DESIRED = {
    Phase.BOOTING: "RUNNING",
    Phase.RUNNING: "RUNNING",
    Phase.STOPPED: "EXITED",
    Phase.PREEMPTED: "EXITED",
    Phase.TERMINATING: "TERMINATED",
    Phase.TERMINATED: "TERMINATED",
}


def native_state(instance: SimInstance, now: float) -> str:
    return _DESIRED[instance.phase]


def v2_status(instance: SimInstance, now: float) -> str:
    if instance.phase is Phase.BOOTING:
        if instance.running_at is None:  # a failed provisioning never gets further
            return "PROVISIONING"
        halfway = instance.phase_since + (instance.running_at - instance.phase_since) / 2
        return "PROVISIONING" if now < halfway else "STARTING"
    return {
        Phase.RUNNING: "RUNNING",
        Phase.STOPPED: "EXITED",
        Phase.PREEMPTED: "EXITED",
        Phase.TERMINATING: "TERMINATED",
        Phase.TERMINATED: "TERMINATED",
    }[instance.phase]


_V2_ACTIONS = {
    "PROVISIONING": ["stop", "terminate"],
    "STARTING": ["stop", "terminate"],
    "RUNNING": ["stop", "restart", "terminate"],
    "EXITED": ["start", "terminate"],
    "TERMINATED": [],
}


def problem(status: int, title: str, detail: str, errors: Sequence[str] = ()) -> Reply:
    body: dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = list(errors)
    return Reply(status, body, content_type=PROBLEM)


def _no_capacity() -> Reply:
    return problem(
        400,
        "Bad Request",
        "There are no instances available with the requested specifications; "
        "try another GPU type or data center.",
    )


class RateWindows:
    """Request counts per fixed window, for the RateLimit headers."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}  # window -> (window index, count)

    def hit(self, now: float) -> None:
        for name, _, seconds in RATE_POLICY:
            index = int(now // seconds)
            current, count = self._counts.get(name, (index, 0))
            self._counts[name] = (index, count + 1 if current == index else 1)

    def remaining(self, name: str, quota: int, seconds: int, now: float) -> int:
        index, count = self._counts.get(name, (-1, 0))
        return quota - count if index == int(now // seconds) else quota

    def header(self, now: float) -> str:
        parts = []
        for name, quota, seconds in RATE_POLICY:
            left = max(0, self.remaining(name, quota, seconds, now))
            parts.append(f'"{name}";r={left};t={math.ceil(seconds - now % seconds)}')
        return ", ".join(parts)


class RunPodApi(CloudApi):
    cloud = "runpod"
    retry_after_documented = True  # v2: "Retry-After is integer seconds on this API"

    def __init__(self, state: SimState, config: SimConfig) -> None:
        super().__init__(state, config)
        self.v1 = spec("runpod-v1")
        self.v2 = spec("runpod-v2")
        self.windows = RateWindows()

    def spec_for(self, path: str) -> Spec:
        return self.v2 if path.startswith("/v2/") else self.v1

    def routes(self) -> Sequence[Route]:
        v1, v2 = self.v1, self.v2
        return [
            Route("POST", v1, "/pods", self.create_pod),
            Route("GET", v1, "/pods", self.list_pods),
            Route("GET", v1, "/pods/{podId}", self.get_pod),
            Route("DELETE", v1, "/pods/{podId}", self.delete_pod),
            Route("POST", v1, "/pods/{podId}/stop", self.stop_pod),
            Route("POST", v1, "/pods/{podId}/start", self.start_pod),
            Route("GET", v2, "/v2/catalog/gpus", self.list_gpu_types),
            Route("GET", v2, "/v2/catalog/datacenters", self.list_data_centers),
            Route("GET", v2, "/v2/pods", self.list_pods_v2),
            Route("GET", v2, "/v2/pods/{id}", self.get_pod_v2),
            Route("DELETE", v2, "/v2/pods/{id}", self.delete_pod_v2),
            Route("POST", v2, "/v2/pods/{id}/action", self.pod_action_v2),
        ]

    @property
    def _cloud(self) -> CloudState:
        return self.state.cloud(self.cloud)

    # -- rate limits and errors -------------------------------------------------------

    def admit(self) -> Reply | None:
        now = self.state.clock.now()
        self.windows.hit(now)
        name, quota, seconds = RATE_POLICY[0]
        if (
            self.config.enforce_rate_limits
            and self.windows.remaining(name, quota, seconds, now) < 0
        ):
            retry_after = math.ceil(seconds - now % seconds)
            return self.rate_limited(retry_after)
        return None

    def headers(self) -> dict[str, str]:
        policy = ", ".join(f'"{n}";q={q};w={w}' for n, q, w in RATE_POLICY)
        return {
            "RateLimit": self.windows.header(self.state.clock.now()),
            "RateLimit-Policy": policy,
        }

    def unauthorized(self) -> Reply:
        return problem(401, "Unauthorized", "invalid or missing bearer token")

    def not_found(self, message: str) -> Reply:
        return problem(404, "Not Found", message)

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        if spec is self.v2:
            return problem(422, "Unprocessable Entity", "Request validation failed.", problems)
        return problem(400, "Bad Request", "Invalid input.", problems)

    def internal_error(self) -> Reply:
        return problem(500, "Internal Server Error", "an internal error occurred")

    def rate_limited(self, retry_after: int) -> Reply:
        reply = problem(429, "Too Many Requests", "rate limit exceeded for the minute window")
        return Reply(reply.status, reply.body, PROBLEM, {"Retry-After": str(retry_after)})

    def error_model_problems(self, reply: Reply) -> list[str]:
        body = reply.body
        if reply.content_type != PROBLEM or not isinstance(body, dict):
            return ["errors must be application/problem+json objects"]
        problems = [
            f"{k} must be a string" for k in ("title", "detail") if not isinstance(body.get(k), str)
        ]
        if body.get("status") != reply.status:
            problems.append("status must repeat the HTTP status")
        errors = body.get("errors", [])
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            problems.append("errors must be a list of strings")
        return problems

    # -- v1 pods --------------------------------------------------------------------

    def create_pod(self, call: Call) -> Reply:
        body: dict[str, Any] = call.body
        if body.get("computeType", "GPU") != "GPU":
            raise ApiError(problem(400, "Bad Request", "the simulator rents GPU pods only"))
        count = int(body.get("gpuCount", 1))
        gpu_type, data_center = self._place(body, count)
        capacity_type = self._capacity_type(body)
        price = self._cloud.price(gpu_type, capacity_type)
        if price is None:
            raise ApiError(_no_capacity())
        shape = self._cloud.catalog.types[gpu_type]
        start_cmd = [*body.get("dockerEntrypoint", []), *body.get("dockerStartCmd", [])]
        try:
            instance = self.state.launch(
                self.cloud,
                instance_id=self._cloud.new_id(14),
                name=body.get("name", "my pod"),
                instance_type=gpu_type,
                region=data_center,
                gpu_count=count,
                vcpus=shape.vcpus * count,
                memory_gib=shape.memory_gib * count,
                units=count,
                spot=bool(body.get("interruptible", False)),
                price_per_hour=round(price * count, 4),
                join_script="\n".join(start_cmd),
                join_env=body.get("env") or {},
                request=body,
            )
        except NoCapacityError:
            raise ApiError(_no_capacity()) from None
        return Reply(201, self._pod_json(instance, machine=False))

    def _place(self, body: dict[str, Any], count: int) -> tuple[str, str]:
        """The (GPU type, data centre) the pod lands on, by the request's priorities."""
        cloud = self._cloud
        types = [
            t
            for t in body.get("gpuTypeIds", [])
            if t in cloud.catalog.types and count <= cloud.catalog.types[t].max_count
        ]
        centres = [
            d
            for d in body.get("dataCenterIds", cloud.catalog.regions)
            if d in cloud.catalog.regions
        ]
        if body.get("gpuTypePriority", "availability") == "availability":
            types.sort(key=lambda t: -sum(cloud.free(d, t) for d in centres))
        for gpu_type in types:
            ordered = list(centres)
            if body.get("dataCenterPriority", "availability") == "availability":
                ordered.sort(key=lambda d: -cloud.free(d, gpu_type))
            for centre in ordered:
                if cloud.free(centre, gpu_type) >= count:
                    return gpu_type, centre
        raise ApiError(_no_capacity())

    @staticmethod
    def _capacity_type(body: dict[str, Any]) -> str:
        if body.get("interruptible", False):
            return "spot"
        return "community" if body.get("cloudType", "SECURE") == "COMMUNITY" else "on-demand"

    def list_pods(self, call: Call) -> Reply:
        now = self.state.clock.now()
        pods = [p for p in self._cloud.listed(now) if self._matches(p, call)]
        return Reply(200, [self._pod_json(p, machine=call.flag("includeMachine")) for p in pods])

    def _matches(self, pod: SimInstance, call: Call) -> bool:
        request = pod.request
        checks = [
            ("id", pod.id),
            ("name", pod.name),
            ("desiredStatus", _DESIRED[pod.phase]),
            ("imageName", request.get("imageName", "")),
            ("templateId", request.get("templateId", "")),
            ("computeType", "GPU"),
        ]
        if any(call.query.get(key, value) != value for key, value in checks):
            return False
        if call.query.get("networkVolumeId") or call.query.get("endpointId"):
            return False
        centres, gpus = call.values("dataCenterId"), call.values("gpuTypeId")
        return (not centres or pod.region in centres) and (not gpus or pod.instance_type in gpus)

    def get_pod(self, call: Call) -> Reply:
        return Reply(200, self._pod_json(self._find(call), machine=call.flag("includeMachine")))

    def delete_pod(self, call: Call) -> Reply:
        self.state.terminate(self._find_for_action(call))
        return Reply(204)

    def stop_pod(self, call: Call) -> Reply:
        pod = self._find_for_action(call)
        if pod.phase in (Phase.BOOTING, Phase.RUNNING):
            self.state.stop(pod)
        elif pod.phase is Phase.TERMINATING:
            raise ApiError(problem(400, "Bad Request", "pod is being terminated"))
        return Reply(200, self._pod_json(pod, machine=False))

    def start_pod(self, call: Call) -> Reply:
        pod = self._find_for_action(call)
        try:
            self.state.start(pod)
        except NoCapacityError:
            raise ApiError(_no_capacity()) from None
        except InvalidTransitionError:
            raise ApiError(problem(400, "Bad Request", "pod is being terminated")) from None
        return Reply(200, self._pod_json(pod, machine=False))

    def _find_for_action(self, call: Call) -> SimInstance:
        """The pod of a v1 DELETE, stop or start: the v1 spec documents 400 "Invalid Pod
        ID." (and no 404) for these when the cloud does not know the pod."""
        pod = self._cloud.instances.get(call.path_params["podId"])
        if pod is None or pod.phase is Phase.TERMINATED:
            raise ApiError(problem(400, "Bad Request", "Invalid Pod ID."))
        return pod

    def _find(self, call: Call, key: str = "podId") -> SimInstance:
        pod = self._cloud.instances.get(call.path_params[key])
        if pod is None or pod.phase is Phase.TERMINATED:
            raise ApiError(problem(404, "Not Found", "pod not found"))
        return pod

    # -- v2 pods --------------------------------------------------------------------

    def list_pods_v2(self, call: Call) -> Reply:
        listed = self._cloud.listed(self.state.clock.now())
        return Reply(200, {"pods": [self._pod_v2_json(p) for p in listed]})

    def get_pod_v2(self, call: Call) -> Reply:
        return Reply(200, self._pod_v2_json(self._find(call, "id")))

    def delete_pod_v2(self, call: Call) -> Reply:
        self.state.terminate(self._find(call, "id"))
        return Reply(204)

    def pod_action_v2(self, call: Call) -> Reply:
        pod = self._find(call, "id")
        action = call.body["action"]
        status = v2_status(pod, self.state.clock.now())
        if action not in _V2_ACTIONS[status]:
            detail = f"action {action!r} is not allowed while the pod is {status}"
            raise ApiError(problem(409, "Conflict", detail))
        if action == "terminate":
            self.state.terminate(pod)
            return Reply(204)
        try:
            if action in ("stop", "restart"):
                self.state.stop(pod)
            if action in ("start", "restart"):
                self.state.start(pod)
        except NoCapacityError:
            raise ApiError(_no_capacity()) from None
        return Reply(200, self._pod_v2_json(pod))

    # -- v2 catalog -------------------------------------------------------------------

    def list_gpu_types(self, call: Call) -> Reply:
        includes = call.values("include")
        if "AVAILABILITY" in includes and "POD" not in call.values("product"):
            detail = "product=POD is required with include=AVAILABILITY"
            raise ApiError(problem(400, "Bad Request", detail))
        count = int(call.query.get("count", "1"))
        gpus = []
        for gpu_type in self._cloud.catalog.types:
            entry = self._gpu_json(gpu_type)
            if "AVAILABILITY" in includes:
                centres = [self._availability_json(d, gpu_type, count, d) for d in self._centres()]
                entry["dataCenters"] = centres
                entry["availability"] = max((c["availability"] for c in centres), key=_LEVELS.index)
            gpus.append(entry)
        return Reply(200, {"gpus": gpus})

    def list_data_centers(self, call: Call) -> Reply:
        areas = call.values("regions")
        centres = []
        for centre in self._centres():
            region = self._cloud.catalog.regions[centre]
            if areas and region.area not in areas:
                continue
            entry: dict[str, Any] = {
                "id": centre,
                "name": region.description,
                "region": region.area or "UNKNOWN",
                "globalNetwork": False,
                "networkVolumeTypes": ["STANDARD"],
                "compliance": [],
            }
            if "GPU_AVAILABILITY" in call.values("include"):
                entry["gpuAvailability"] = [
                    self._availability_json(gpu, gpu, 1, centre)
                    for gpu in self._cloud.catalog.types
                ]
            centres.append(entry)
        return Reply(200, {"dataCenters": centres})

    def _centres(self) -> list[str]:
        return list(self._cloud.catalog.regions)

    def _availability_json(
        self, key: str, gpu_type: str, count: int, centre: str
    ) -> dict[str, str]:
        catalog = self._cloud.catalog
        name = (
            catalog.regions[key].description
            if key in catalog.regions
            else catalog.types[key].gpu_name
        )
        fits = self._cloud.free(centre, gpu_type) // max(1, count)
        return {"id": key, "name": name, "availability": _level(fits)}

    def _gpu_json(self, gpu_type: str) -> dict[str, Any]:
        cloud = self._cloud
        machine = cloud.catalog.types[gpu_type]
        secure = cloud.price(gpu_type) or 0.0
        community = cloud.price(gpu_type, "community")
        return {
            "id": gpu_type,
            "name": machine.gpu_name,
            "pool": machine.pool,
            "manufacturer": "NVIDIA" if gpu_type.startswith("NVIDIA") else "UNKNOWN",
            "memory": machine.gpu_memory_gib,
            "secure": True,
            "community": community is not None,
            "price": {
                "secure": secure,
                "community": community if community is not None else secure,
            },
            "maxCount": {"secure": machine.max_count, "community": machine.max_count},
        }

    # -- shapes -----------------------------------------------------------------------

    def _pod_json(self, pod: SimInstance, *, machine: bool) -> dict[str, Any]:
        request = pod.request
        up = pod.phase is Phase.RUNNING
        data: dict[str, Any] = {
            "id": pod.id,
            "name": pod.name,
            "desiredStatus": _DESIRED[pod.phase],
            "costPerHr": pod.price_per_hour,
            "adjustedCostPerHr": pod.price_per_hour,
            "interruptible": pod.spot,
            "locked": bool(request.get("locked", False)),
            "image": request.get("imageName", ""),
            "env": dict(pod.join_env),
            "gpu": self._pod_gpu_json(pod),
            "machineId": f"m{pod.id[:11]}",
            "consumerUserId": "user_sim",
            "memoryInGb": pod.memory_gib,
            "vcpuCount": pod.vcpus,
            "containerDiskInGb": _given(request, "containerDiskInGb", 50),
            "volumeInGb": _given(request, "volumeInGb", 20),
            "volumeMountPath": request.get("volumeMountPath", "/workspace"),
            "ports": list(request.get("ports") or DEFAULT_PORTS),
            "dockerEntrypoint": list(request.get("dockerEntrypoint", [])),
            "dockerStartCmd": list(request.get("dockerStartCmd", [])),
            "publicIp": pod.public_ip if up else None,
            "portMappings": {"22": 20000 + int(pod.public_ip.rsplit(".", 1)[1])}
            if up and pod.public_ip
            else None,
            "lastStatusChange": self._status_change(pod),
        }
        if "templateId" in request:
            data["templateId"] = request["templateId"]
        if pod.running_at is not None and (up or pod.phase is not Phase.BOOTING):
            data["lastStartedAt"] = iso8601(pod.running_at)
        if machine:
            data["machine"] = self._machine_json(pod)
        return data

    def _pod_gpu_json(self, pod: SimInstance) -> dict[str, Any]:
        cloud = self._cloud
        community = cloud.price(pod.instance_type, "community")
        spot = cloud.price(pod.instance_type, "spot")
        data: dict[str, Any] = {
            "id": pod.instance_type,
            "count": pod.gpu_count,
            "displayName": cloud.catalog.types[pod.instance_type].gpu_name,
            "securePrice": cloud.price(pod.instance_type) or 0.0,
        }
        if community is not None:
            data["communityPrice"] = community
        if spot is not None:
            data["communitySpotPrice"] = spot
            data["secureSpotPrice"] = spot
        return data

    def _machine_json(self, pod: SimInstance) -> dict[str, Any]:
        shape = self._cloud.catalog.types[pod.instance_type]
        secure = pod.request.get("cloudType", "SECURE") == "SECURE"
        return {
            "gpuTypeId": pod.instance_type,
            "gpuDisplayName": shape.gpu_name,
            "dataCenterId": pod.region,
            "location": self._cloud.catalog.regions[pod.region].description,
            "secureCloud": secure,
            "supportPublicIp": True,
            "minPodGpuCount": 1,
            "cpuCount": shape.vcpus * shape.max_count,
            "gpuAvailable": self._cloud.free(pod.region, pod.instance_type),
            "costPerHr": pod.price_per_hour,
            "currentPricePerGpu": round(pod.price_per_hour / max(1, pod.gpu_count), 4),
        }

    def _pod_v2_json(self, pod: SimInstance) -> dict[str, Any]:
        request = pod.request
        status = v2_status(pod, self.state.clock.now())
        up = status == "RUNNING"
        proxy = {
            "host": "ssh.runpod.io",
            "port": 22,
            "username": f"{pod.id}-64411eb2",
            "command": f"ssh {pod.id}-64411eb2@ssh.runpod.io",
        }
        direct = None
        if up and pod.public_ip:
            port = 20000 + int(pod.public_ip.rsplit(".", 1)[1])
            direct = {
                "host": pod.public_ip,
                "port": port,
                "username": "root",
                "command": f"ssh root@{pod.public_ip} -p {port}",
            }
        return {
            "id": pod.id,
            "name": pod.name,
            "status": status,
            "actions": list(_V2_ACTIONS[status]),
            "image": request.get("imageName", ""),
            "args": " ".join(request.get("dockerStartCmd", [])),
            "disk": _given(request, "containerDiskInGb", 50),
            "mounts": {},
            "ports": list(request.get("ports") or DEFAULT_PORTS),
            "env": dict(pod.join_env),
            "registry": None,
            "cloud": request.get("cloudType", "SECURE"),
            "dataCenterId": pod.region,
            "cudaVersion": "12.8",
            "gpu": {"id": pod.instance_type, "count": pod.gpu_count},
            "ssh": {"proxy": proxy, "direct": direct},
            "template": request.get("templateId"),
            "cost": pod.price_per_hour if status not in ("EXITED", "TERMINATED") else 0.0,
            "locked": bool(request.get("locked", False)),
            "runtime": {"uptime": int(self.state.clock.now() - pod.phase_since)} if up else None,
            "createdAt": iso8601(pod.created_at),
            "startedAt": iso8601(pod.running_at) if pod.running_at and up else None,
            "globalNetworking": {"enabled": False},
        }

    @staticmethod
    def _status_change(pod: SimInstance) -> str:
        verb = {
            Phase.STOPPED: "Exited by user",
            Phase.PREEMPTED: "Interrupted by host",
            Phase.TERMINATING: "Terminated by user",
        }.get(pod.phase, "Rented by User")
        return f"{verb}: {iso8601(pod.phase_since)}"


_LEVELS = ["NONE", "LOW", "MEDIUM", "HIGH"]


def _given(request: Any, key: str, default: int) -> Any:
    """A create field as sent, RunPod's default when absent or null (0 is a value)."""
    value = request.get(key)
    return default if value is None else value


def _level(fits: int) -> str:
    """Availability of one pod size from how many such pods fit."""
    if fits <= 0:
        return "NONE"
    if fits == 1:
        return "LOW"
    return "MEDIUM" if fits < 4 else "HIGH"
