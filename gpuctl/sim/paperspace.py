"""Simulated Paperspace API v1 (spec: "Paperspace OpenAPI" 1), served under /v1.

Operations: GET /auth/session, GET/POST /machines, GET/DELETE /machines/{id},
GET/POST /startup-scripts, GET/DELETE /startup-scripts/{id},
POST /startup-scripts/{id}/unassign, GET /machine-events, GET /machine-events/{id},
GET /machine-availability, GET /os-templates.

- POST /machines needs a known `machineType`, `region` and `templateId`
  (`GET /os-templates`), `diskSize` >= 50 and, if given, a live
  `startupScriptId`; the script's text at that moment is the machine's join
  data (the machine runs it with bash at boot). No capacity -> 400
  `{"message": "...", "code": "BAD_REQUEST"}`. Answers `{event, data: machine}`.
  `startOnCreate` is not modelled: every machine starts. `emailPassword` defaults to
  true as in the spec: each such machine is noted in `objects["password-emails"]`.
- machine events: the create answers a `create` event (state new); it is
  `in progress` while the machine boots, `done` once it runs, and `error` (with the
  error text) when its provisioning failed (`SimState.fail_next_boots`: the machine
  itself stays `provisioning`). DELETE adds a `deactivate` event. GET /machine-events
  filters by `machineId`, newest first, paged like the other lists.
- state: provisioning (first half of the boot) -> starting -> ready; `off`
  once stopped or interrupted; DELETE -> stopping for `terminate_seconds`,
  then the machine is gone (404) and out of the list. `usageRate` is the price.
- GET /machines: newest first (`orderBy`/`order` honoured), filters `name`,
  `region`, `machineType`, `agentType`; paging with `limit` (default 20) and
  the `after` cursor (`nextPage` = id of the last machine on the page).
- Errors: `{message, code, details?}` with tRPC-style codes (UNAUTHORIZED,
  NOT_FOUND, BAD_REQUEST, TOO_MANY_REQUESTS, INTERNAL_SERVER_ERROR).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gpuctl.sim.clock import iso8601
from gpuctl.sim.config import SimConfig
from gpuctl.sim.model import Phase, SimInstance
from gpuctl.sim.server import ApiError, Call, CloudApi, Reply, Route
from gpuctl.sim.specs import Spec, spec
from gpuctl.sim.state import CloudState, NoCapacityError, SimState

SCRIPTS = "startup-scripts"
EVENTS = "machine-events"
PASSWORD_EMAILS = "password-emails"  # machines created without emailPassword: false
MIN_DISK_GB = 50
PAGE_SIZE = 20
GIB = 1024**3
# When the simulated account was created: fixed, so answers are reproducible.
ACCOUNT_CREATED = "2024-01-15T12:00:00.000Z"


def native_state(instance: SimInstance, now: float) -> str:
    if instance.phase is Phase.BOOTING:
        if instance.running_at is None:  # a failed provisioning never gets further
            return "provisioning"
        halfway = instance.phase_since + (instance.running_at - instance.phase_since) / 2
        return "provisioning" if now < halfway else "starting"
    return {
        Phase.RUNNING: "ready",
        Phase.STOPPED: "off",
        Phase.PREEMPTED: "off",
        Phase.TERMINATING: "stopping",
        Phase.TERMINATED: "off",
    }[instance.phase]


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Reply:
    body: dict[str, Any] = {"message": message, "code": code}
    if details is not None:
        body["details"] = details
    return Reply(status, body)


def _bad_request(message: str) -> Reply:
    return _error(400, "BAD_REQUEST", message)


class PaperspaceApi(CloudApi):
    cloud = "paperspace"

    def __init__(self, state: SimState, config: SimConfig) -> None:
        super().__init__(state, config)
        self.spec = spec("paperspace")

    def spec_for(self, path: str) -> Spec:
        return self.spec

    def routes(self) -> Sequence[Route]:
        s = self.spec
        return [
            Route("GET", s, "/auth/session", self.session),
            Route("GET", s, "/machines", self.list_machines),
            Route("POST", s, "/machines", self.create_machine),
            Route("GET", s, "/machines/{id}", self.get_machine),
            Route("DELETE", s, "/machines/{id}", self.delete_machine),
            Route("GET", s, "/startup-scripts", self.list_scripts),
            Route("POST", s, "/startup-scripts", self.create_script),
            Route("GET", s, "/startup-scripts/{id}", self.get_script),
            Route("DELETE", s, "/startup-scripts/{id}", self.delete_script),
            Route("POST", s, "/startup-scripts/{id}/unassign", self.unassign_script),
            Route("GET", s, "/machine-events", self.list_events),
            Route("GET", s, "/machine-events/{id}", self.get_event),
            Route("GET", s, "/machine-availability", self.availability),
            Route("GET", s, "/os-templates", self.list_templates),
        ]

    @property
    def _cloud(self) -> CloudState:
        return self.state.cloud(self.cloud)

    # -- errors ---------------------------------------------------------------------

    def unauthorized(self) -> Reply:
        return _error(401, "UNAUTHORIZED", "Invalid API key or access token")

    def not_found(self, message: str) -> Reply:
        return _error(404, "NOT_FOUND", message)

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        return _error(400, "BAD_REQUEST", "Input validation failed", {"issues": list(problems)})

    def internal_error(self) -> Reply:
        return _error(500, "INTERNAL_SERVER_ERROR", "An internal error occurred")

    def rate_limited(self, retry_after: int) -> Reply:
        reply = _error(429, "TOO_MANY_REQUESTS", "Too many requests")
        return Reply(reply.status, reply.body, headers={"Retry-After": str(retry_after)})

    def error_model_problems(self, reply: Reply) -> list[str]:
        body = reply.body
        if not isinstance(body, dict) or not set(body) <= {"message", "code", "details"}:
            return ["errors must be {message, code, details?}"]
        problems = [
            f"{k} must be a string" for k in ("message", "code") if not isinstance(body.get(k), str)
        ]
        if not isinstance(body.get("details", {}), dict):
            problems.append("details must be an object")
        return problems

    # -- account and catalogue --------------------------------------------------------

    def session(self, call: Call) -> Reply:
        team = {
            "name": "gpuctl-sim",
            "id": "tsim0001",
            "namespace": "gpuctl-sim",
            "isUserTeam": True,
            "dtCreated": ACCOUNT_CREATED,
        }
        user = {
            "firstName": "Simulated",
            "lastName": "User",
            "email": "sim@gpuctl.invalid",
            "dtCreated": ACCOUNT_CREATED,
            "dtConfirmed": ACCOUNT_CREATED,
            "teamMemberships": [{"team": team, "isOwner": True, "isAdmin": True}],
            "isPhoneVerified": True,
            "isPasswordAuthEnabled": False,
            "isQrCodeBasedMfaEnabled": False,
            "isQrCodeBasedMfaConfirmed": False,
            "id": "usim0001",
            "analyticsId": 1,
            "metadata": {},
        }
        account = {
            "namespace": "gpuctl-sim",
            "isPrivate": True,
            "maxMachines": 100,
            "id": "tsim0001",
            "analyticsId": 1,
        }
        return Reply(200, {"user": user, "team": account})

    def availability(self, call: Call) -> Reply:
        machine_type, region = call.query["machineType"], call.query["region"]
        return Reply(200, {"available": self._cloud.free(region, machine_type) > 0})

    def list_templates(self, call: Call) -> Reply:
        catalog = self._cloud.catalog
        name = call.query.get("name")
        items = [
            {
                "id": template_id,
                "name": template.name,
                "agentType": "LinuxServer",
                "operatingSystemLabel": template.os,
                "defaultSizeGb": MIN_DISK_GB,
                "availableMachineTypes": [
                    {"machineTypeLabel": t, "isAvailable": True} for t in catalog.types
                ],
                "dtCreated": ACCOUNT_CREATED,
            }
            for template_id, template in catalog.templates.items()
            if name is None or template.name == name
        ]
        return self._page(items, call, key=lambda item: item["name"], default_desc=True)

    # -- machines -------------------------------------------------------------------

    def create_machine(self, call: Call) -> Reply:
        body: dict[str, Any] = call.body
        cloud = self._cloud
        machine_type, region = body["machineType"], body["region"]
        script = self._check_create(body)
        price = cloud.price(machine_type)
        assert price is not None
        shape = cloud.catalog.types[machine_type]
        try:
            machine = self.state.launch(
                self.cloud,
                instance_id="ps" + cloud.new_id(7),
                name=body["name"],
                instance_type=machine_type,
                region=region,
                gpu_count=shape.gpu_count,
                vcpus=shape.vcpus,
                memory_gib=shape.memory_gib,
                units=1,
                spot=False,
                price_per_hour=price,
                join_script=script["script"] if script else "",
                request=body,
            )
        except NoCapacityError:
            raise ApiError(
                _bad_request(
                    f"Machine type {machine_type} is not available in {region}. "
                    "Try another region or machine type."
                )
            ) from None
        if script is not None:
            script["assignedMachineIds"].append(machine.id)
        if body.get("emailPassword", True):  # the spec's default: mail a password
            self._cloud.objects.setdefault(PASSWORD_EMAILS, {})[machine.id] = {
                "machineId": machine.id,
                "dtCreated": iso8601(self.state.clock.now()),
            }
        return Reply(
            200, {"event": self._event("create", machine), "data": self._machine_json(machine)}
        )

    def _check_create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Validate what the spec cannot; the startup script to run, if any."""
        catalog = self._cloud.catalog
        if body["machineType"] not in catalog.types:
            raise ApiError(_bad_request(f"Invalid machine type {body['machineType']!r}"))
        if body["region"] not in catalog.regions:
            raise ApiError(_bad_request(f"Invalid region {body['region']!r}"))
        if body["templateId"] not in catalog.templates:
            raise ApiError(self.not_found(f"Template {body['templateId']} not found"))
        if body["diskSize"] < MIN_DISK_GB:
            raise ApiError(_bad_request(f"diskSize must be at least {MIN_DISK_GB} GB"))
        if (script_id := body.get("startupScriptId")) is None:
            return None
        return self._live_script(script_id)

    def list_machines(self, call: Call) -> Reply:
        filters = {k: call.query.get(k) for k in ("name", "region", "machineType")}
        agent = call.query.get("agentType")
        machines = [
            self._machine_json(m)
            for m in self._cloud.listed(self.state.clock.now())
            if m.phase is not Phase.TERMINATED and (agent is None or agent == "LinuxServer")
        ]
        items = [m for m in machines if all(v is None or m[k] == v for k, v in filters.items())]
        order_by = call.query.get("orderBy", "dtCreated")
        return self._page(items, call, key=lambda m: m[order_by], default_desc=True)

    def get_machine(self, call: Call) -> Reply:
        return Reply(200, self._machine_json(self._find(call.path_params["id"])))

    def delete_machine(self, call: Call) -> Reply:
        machine = self._find(call.path_params["id"])
        if machine.phase.live:
            self._record_event("deactivate", machine)
        self.state.terminate(machine)
        return Reply(
            200, {"event": self._event("deactivate", machine), "data": self._machine_json(machine)}
        )

    def _find(self, machine_id: str) -> SimInstance:
        machine = self._cloud.instances.get(machine_id)
        if machine is None or machine.phase is Phase.TERMINATED:
            raise ApiError(self.not_found(f"Machine {machine_id} not found"))
        return machine

    # -- startup scripts ----------------------------------------------------------------

    def create_script(self, call: Call) -> Reply:
        body: dict[str, Any] = call.body
        script_id = "s" + self._cloud.new_id(8)
        record = {
            "id": script_id,
            "name": body["name"],
            "description": None,
            "isEnabled": True,
            "isRunOnce": bool(body.get("isRunOnce", False)),
            "assignedMachineIds": [],
            "dtCreated": iso8601(self.state.clock.now()),
            "dtDeleted": None,
            "script": body["script"],
        }
        self._cloud.objects.setdefault(SCRIPTS, {})[script_id] = record
        return Reply(200, _script_json(record))

    def list_scripts(self, call: Call) -> Reply:
        name = call.query.get("name")
        items = [
            _script_json(s)
            for s in self._cloud.objects.get(SCRIPTS, {}).values()
            if s["dtDeleted"] is None and (name is None or s["name"] == name)
        ]
        order_by = call.query.get("orderBy", "dtCreated")
        return self._page(items, call, key=lambda s: s[order_by], default_desc=True)

    def get_script(self, call: Call) -> Reply:
        return Reply(200, _script_json(self._live_script(call.path_params["id"])))

    def delete_script(self, call: Call) -> Reply:
        record = self._live_script(call.path_params["id"])
        record["dtDeleted"] = iso8601(self.state.clock.now())
        return Reply(200, _script_json(record))

    def unassign_script(self, call: Call) -> Reply:
        record = self._live_script(call.path_params["id"])
        machine_id = call.body["machineId"]
        record["assignedMachineIds"] = [m for m in record["assignedMachineIds"] if m != machine_id]
        return Reply(200, _script_json(record))

    def _live_script(self, script_id: str) -> dict[str, Any]:
        record = self._cloud.objects.get(SCRIPTS, {}).get(script_id)
        if record is None or record["dtDeleted"] is not None:
            raise ApiError(self.not_found(f"Startup script {script_id} not found"))
        return record

    # -- shapes -----------------------------------------------------------------------

    def _page(
        self,
        items: list[dict[str, Any]],
        call: Call,
        *,
        key: Callable[[dict[str, Any]], Any],
        default_desc: bool,
    ) -> Reply:
        """One page of a list, in the requested order, after the `after` cursor."""
        descending = call.query.get("order", "desc" if default_desc else "asc") == "desc"
        ordered = sorted(items, key=key, reverse=descending)
        if after := call.query.get("after"):
            ids = [item["id"] for item in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        limit = int(call.query.get("limit", PAGE_SIZE))
        page = ordered[:limit]
        body: dict[str, Any] = {"items": page, "hasMore": len(ordered) > limit}
        if body["hasMore"]:
            body["nextPage"] = page[-1]["id"]
        return Reply(200, body)

    # -- machine events -----------------------------------------------------------------

    def list_events(self, call: Call) -> Reply:
        machine_id = call.query.get("machineId")
        items = [
            self._event_json(e)
            for e in self._cloud.objects.get(EVENTS, {}).values()
            if machine_id is None or e["machineId"] == machine_id
        ]
        return self._page(items, call, key=lambda e: (e["dtCreated"], e["id"]), default_desc=True)

    def get_event(self, call: Call) -> Reply:
        record = self._cloud.objects.get(EVENTS, {}).get(call.path_params["id"])
        if record is None:
            raise ApiError(self.not_found(f"Machine event {call.path_params['id']} not found"))
        return Reply(200, self._event_json(record))

    def _event(self, name: str, machine: SimInstance) -> dict[str, Any]:
        """A new event, as the operation that starts it answers it (state new)."""
        return {**self._record_event(name, machine), "state": "new"}

    def _record_event(self, name: str, machine: SimInstance) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": "e" + self._cloud.new_id(11),
            "name": name,
            "machineId": machine.id,
            "dtCreated": iso8601(self.state.clock.now()),
        }
        self._cloud.objects.setdefault(EVENTS, {})[record["id"]] = record
        return self._event_json(record)

    def _event_json(self, record: dict[str, Any]) -> dict[str, Any]:
        """The event now: a create is in progress while the machine boots, done once it
        runs, error when its provisioning failed; a deactivate is done once it is gone."""
        machine = self._cloud.instances.get(record["machineId"])
        error = self._cloud.boot_errors.get(record["machineId"])
        started = record["dtCreated"]
        state, finished = "in progress", None
        if record["name"] == "create" and error is not None:
            state, error_text = "error", error
        else:
            error_text = None
            booting = machine is not None and machine.phase is Phase.BOOTING
            terminating = machine is not None and machine.phase is Phase.TERMINATING
            if not (booting if record["name"] == "create" else terminating):
                state = "done"
        if state in ("done", "error"):
            finished = iso8601(machine.phase_since) if machine is not None else started
        return {
            "id": record["id"],
            "name": record["name"],
            "state": state,
            "machineId": record["machineId"],
            "dtCreated": record["dtCreated"],
            "dtStarted": started,
            "dtFinished": finished,
            "error": error_text,
        }

    def _machine_json(self, machine: SimInstance) -> dict[str, Any]:
        shape = self._cloud.catalog.types[machine.instance_type]
        request = machine.request
        template = self._cloud.catalog.templates.get(request.get("templateId", ""))
        now = self.state.clock.now()
        up = machine.phase is Phase.RUNNING
        ip_type = request.get("publicIpType", "dynamic")
        disk_gb = int(request.get("diskSize", MIN_DISK_GB))
        return {
            "id": machine.id,
            "name": machine.name,
            "state": native_state(machine, now),
            "os": template.os if template else "Ubuntu 22.04",
            "machineType": machine.instance_type,
            "agentType": "LinuxServer",
            "cpus": shape.vcpus,
            "ram": shape.memory_gib * GIB,
            "storageTotal": disk_gb * GIB,
            "storageUsed": 0,
            "accelerators": [
                {"name": shape.gpu_name, "memory": shape.gpu_memory_gib, "count": shape.gpu_count}
            ],
            "region": machine.region,
            "privateIp": machine.private_ip,
            "networkId": request.get("networkId"),
            "publicIp": machine.public_ip if up and ip_type != "none" else None,
            "publicIpType": ip_type,
            "autoShutdownEnabled": bool(request.get("autoShutdownEnabled", False)),
            "autoShutdownTimeout": request.get("autoShutdownTimeout"),
            "autoShutdownForce": request.get("autoShutdownForce"),
            "autoSnapshotEnabled": bool(request.get("autoSnapshotEnabled", False)),
            # The spec's nullable enums do not list null, so a strict validator
            # rejects null: answer the cloud's defaults instead.
            "autoSnapshotFrequency": request.get("autoSnapshotFrequency", "daily"),
            "autoSnapshotSaveCount": request.get("autoSnapshotSaveCount"),
            "updatesPending": False,
            "restorePointEnabled": bool(request.get("restorePointEnabled", False)),
            "restorePointFrequency": request.get("restorePointFrequency", "shutdown"),
            "restorePointSnapshotId": None,
            "usageRate": machine.price_per_hour,
            "storageRate": round(disk_gb * 0.0001, 4),
            "dtCreated": iso8601(machine.created_at),
            "dtModified": iso8601(machine.phase_since),
            "dtDeleted": None,
            "reservation": None,
        }


def _script_json(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "script"}
