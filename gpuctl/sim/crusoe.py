"""Simulated Crusoe Cloud API (spec: "Crusoe Cloud API Gateway" v1), served under /v1.

Operations: GET /organizations/projects, GET /capacities,
GET/POST /projects/{project_id}/compute/vms/instances,
GET/DELETE /projects/{project_id}/compute/vms/instances/{vm_id},
GET /projects/{project_id}/compute/vms/instances/operations/{operation_id}.

- auth: every request must carry a valid signature (client-go's auth/v1, see
  gpuctl/providers/crusoe/signing.py): `Authorization: Bearer 1.0:<key ID>:<sig>` over
  this request's path, query, method and `X-Crusoe-Timestamp`. A missing, malformed or
  wrong signature, an unknown key ID, or a timestamp more than 5 minutes from the real
  time (Crusoe documents the timestamp as replay protection, without a window: assumed)
  gets the spec's authError, 401 `{"code": "401", "message": "bad_credential"}`. The
  one credential is `SimConfig.api_key("crusoe")`, `<key ID>:<secret key>`.
- one project (`GET /organizations/projects`); any other project id is 403.
- create: `type` and `location` must be known, `ssh_public_key` must look like an
  OpenSSH public key, else 400 `{"code": "400", "message": "bad_request: ..."}`. It
  answers `{operation}` at once: the VM exists from then on (listed, billed) and the
  operation is IN_PROGRESS while it boots, SUCCEEDED (result: the VM) once it runs.
  Without capacity no VM is made and the operation is FAILED with result
  `{"code": "out_of_stock", "message": ...}`; a failed provisioning
  (`SimState.fail_next_boots`) leaves the VM STATE_BLOCKED and its operation FAILED
  with the error. `startup_script` is the VM's join data: run at boot by a shell, as
  root, from `/` (docs.crusoecloud.com "Lifecycle scripts").
- states: STATE_DEFINING while booting (STATE_BLOCKED when its provisioning failed),
  STATE_RUNNING, STATE_SHUTOFF when stopped or preempted, STATE_SHUTDOWN while
  deleting; a deleted VM is gone (404 `not_found`, out of the list).
- DELETE answers `{operation}` (IN_PROGRESS until the VM is gone, then SUCCEEDED).
- GET instances: filters `ids`, `names`, `types`, `locations`, `states`
  (comma-separated), newest first, `limit` (default 20) and `next_token`
  (`next_page_token` is empty on the last page).
- GET /capacities: `{items: [{type, location, quantity}]}` for every (VM type,
  location), filtered by `product_name` and `location`.
- errors: `{code, message}` with the status as `code`, as the spec's examples.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDictProxy, MultiMapping

from gpuctl.providers.crusoe import signing
from gpuctl.sim.config import SimConfig
from gpuctl.sim.model import Phase, SimInstance
from gpuctl.sim.server import ApiError, Call, CloudApi, Reply, Route
from gpuctl.sim.specs import Spec, spec
from gpuctl.sim.state import CloudState, NoCapacityError, SimState

OPERATIONS = "operations"
MAX_SKEW_SECONDS = 300.0
PAGE_SIZE = 20
INSTANCES = "/projects/{project_id}/compute/vms/instances"
_SSH_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-")


def native_state(instance: SimInstance, now: float) -> str:
    if instance.phase is Phase.BOOTING and instance.running_at is None:
        return "STATE_BLOCKED"  # its provisioning failed: it never gets further
    return {
        Phase.BOOTING: "STATE_DEFINING",
        Phase.RUNNING: "STATE_RUNNING",
        Phase.STOPPED: "STATE_SHUTOFF",
        Phase.PREEMPTED: "STATE_SHUTOFF",
        Phase.TERMINATING: "STATE_SHUTDOWN",
        Phase.TERMINATED: "STATE_DELETED",
    }[instance.phase]


def _error(status: int, message: str) -> Reply:
    return Reply(status, {"code": str(status), "message": message})


def _uuid(text: str) -> str:
    return str(uuid.UUID(hashlib.sha256(text.encode()).hexdigest()[:32]))


def project_id(seed: int) -> str:
    """The id of the one project of the simulated account with this seed."""
    return _uuid(f"{seed}/crusoe/project")


class CrusoeApi(CloudApi):
    cloud = "crusoe"

    def __init__(self, state: SimState, config: SimConfig) -> None:
        super().__init__(state, config)
        self.spec = spec("crusoe")
        key_id, secret = signing.split_credentials(self.api_key)
        self.credentials = {key_id: secret}
        self.organization_id = _uuid(f"{config.seed}/crusoe/organization")
        self.project_id = project_id(config.seed)

    def spec_for(self, path: str) -> Spec:
        return self.spec

    def routes(self) -> Sequence[Route]:
        s = self.spec
        return [
            Route("GET", s, "/organizations/projects", self.list_projects),
            Route("GET", s, "/capacities", self.list_capacities),
            Route("POST", s, INSTANCES, self.create_instance),
            Route("GET", s, INSTANCES, self.list_instances),
            Route("GET", s, INSTANCES + "/{vm_id}", self.get_instance),
            Route("DELETE", s, INSTANCES + "/{vm_id}", self.delete_instance),
            Route("GET", s, INSTANCES + "/operations/{operation_id}", self.get_operation),
        ]

    @property
    def _cloud(self) -> CloudState:
        return self.state.cloud(self.cloud)

    # -- auth and errors ----------------------------------------------------------------

    def authenticate(
        self, method: str, path: str, query: MultiMapping[str], headers: CIMultiDictProxy[str]
    ) -> bool:
        return signing.verify(
            self.credentials,
            method,
            path,
            list(query.items()),
            headers,
            now=datetime.datetime.now(datetime.UTC),  # the client signs with real time
            max_skew_seconds=MAX_SKEW_SECONDS,
        )

    def unauthorized(self) -> Reply:
        return _error(401, "bad_credential")

    def not_found(self, message: str) -> Reply:
        return _error(404, f"not_found: {message}")

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        return _error(400, "bad_request: " + "; ".join(problems))

    def internal_error(self) -> Reply:
        return _error(500, "internal_error")

    def rate_limited(self, retry_after: int) -> Reply:
        reply = _error(429, "too_many_requests")
        return Reply(reply.status, reply.body, headers={"Retry-After": str(retry_after)})

    def error_model_problems(self, reply: Reply) -> list[str]:
        body = reply.body
        allowed = {"code", "message", "error_id", "reason"}
        if not isinstance(body, dict) or not set(body) <= allowed:
            return ["errors must be {code, message, error_id?, reason?}"]
        return [f"{k} must be a string" for k in body if not isinstance(body[k], str)] + [
            f"{k} is required" for k in ("code", "message") if k not in body
        ]

    # -- account and catalogue --------------------------------------------------------

    def list_projects(self, call: Call) -> Reply:
        count = {"count": 0}
        resources = {
            "disks": count,
            "images": count,
            "instances": {"count": sum(1 for _ in self._cloud.live())},
            "snapshots": count,
            "vpc_networks": count,
        }
        project = {
            "id": self.project_id,
            "name": "default",
            "organization_id": self.organization_id,
            "relation": "owner",
            "resources": resources,
        }
        return Reply(200, {"items": [project]})

    def list_capacities(self, call: Call) -> Reply:
        types, locations = call.values("product_name"), call.values("location")
        items = [
            {"type": vm_type, "location": region, "quantity": free}
            for (region, vm_type), free in sorted(self._cloud.capacity.items())
            if (not types or vm_type in types) and (not locations or region in locations)
        ]
        return Reply(200, {"items": items})

    # -- instances ----------------------------------------------------------------------

    def _check_project(self, call: Call) -> None:
        if call.path_params["project_id"] != self.project_id:
            raise ApiError(_error(403, "unauthorized: not a member of this project"))

    def create_instance(self, call: Call) -> Reply:
        self._check_project(call)
        body: dict[str, Any] = call.body
        cloud = self._cloud
        vm_type, location = body["type"], body["location"]
        if vm_type not in cloud.catalog.types:
            raise ApiError(_error(400, f"bad_request: unknown VM type {vm_type!r}"))
        if location not in cloud.catalog.regions:
            raise ApiError(_error(400, f"bad_request: unknown location {location!r}"))
        if not str(body["ssh_public_key"]).startswith(_SSH_KEY_PREFIXES):
            raise ApiError(_error(400, "bad_request: ssh_public_key is not an SSH public key"))
        shape = cloud.catalog.types[vm_type]
        price = cloud.price(vm_type)
        assert price is not None
        try:
            vm = self.state.launch(
                self.cloud,
                instance_id=_uuid(f"{self.config.seed}/crusoe/vm/{cloud.new_id(16)}"),
                name=body["name"],
                instance_type=vm_type,
                region=location,
                gpu_count=shape.gpu_count,
                vcpus=shape.vcpus,
                memory_gib=shape.memory_gib,
                units=1,
                spot=False,
                price_per_hour=price,
                join_script=body.get("startup_script", ""),
                request=body,
            )
        except NoCapacityError:
            failure = {
                "code": "out_of_stock",
                "message": f"out of stock: no {vm_type} capacity in {location}",
            }
            return Reply(200, {"operation": self._operation_json(self._record("create", failure))})
        return Reply(200, {"operation": self._operation_json(self._record("create", vm_id=vm.id))})

    def list_instances(self, call: Call) -> Reply:
        self._check_project(call)
        now = self.state.clock.now()
        filters = {
            key: set(call.values(param))
            for param, key in (
                ("ids", "id"),
                ("names", "name"),
                ("types", "type"),
                ("locations", "location"),
                ("states", "state"),
            )
        }
        vms = sorted(self._cloud.listed(now), key=lambda vm: (-vm.created_at, vm.id))
        items = [
            vm
            for vm in map(self._vm_json, vms)
            if all(not want or vm[key] in want for key, want in filters.items())
        ]
        start = _page_start(call.query.get("next_token"))
        limit = int(call.query.get("limit", str(PAGE_SIZE)) or PAGE_SIZE)
        page = items[start : start + limit]
        more = start + limit < len(items)
        next_token = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        previous = base64.urlsafe_b64encode(str(max(0, start - limit)).encode()).decode()
        return Reply(
            200,
            {
                "items": page,
                "next_page_token": next_token if more else "",
                "prev_page_token": previous if start else "",
            },
        )

    def get_instance(self, call: Call) -> Reply:
        self._check_project(call)
        return Reply(200, self._vm_json(self._find(call.path_params["vm_id"])))

    def delete_instance(self, call: Call) -> Reply:
        self._check_project(call)
        vm = self._find(call.path_params["vm_id"])
        self.state.terminate(vm)
        return Reply(200, {"operation": self._operation_json(self._record("delete", vm_id=vm.id))})

    def get_operation(self, call: Call) -> Reply:
        self._check_project(call)
        record = self._cloud.objects.get(OPERATIONS, {}).get(call.path_params["operation_id"])
        if record is None:
            raise ApiError(_error(400, "bad_request: no such operation"))
        return Reply(200, self._operation_json(record))

    def _find(self, vm_id: str) -> SimInstance:
        vm = self._cloud.instances.get(vm_id)
        if vm is None or vm.phase is Phase.TERMINATED:
            raise ApiError(self.not_found(f"VM {vm_id}"))
        return vm

    # -- operations ---------------------------------------------------------------------

    def _record(
        self, kind: str, failure: dict[str, str] | None = None, *, vm_id: str = ""
    ) -> dict[str, Any]:
        now = self.state.clock.now()
        record: dict[str, Any] = {
            "id": _uuid(f"{self.config.seed}/crusoe/op/{self._cloud.new_id(16)}"),
            "kind": kind,
            "vm_id": vm_id,
            "started_at": now,
            "failure": failure,
        }
        self._cloud.objects.setdefault(OPERATIONS, {})[record["id"]] = record
        return record

    def _operation_json(self, record: dict[str, Any]) -> dict[str, Any]:
        """The operation now: its state follows its VM's."""
        vm = self._cloud.instances.get(record["vm_id"])
        failure = record["failure"]
        if vm is not None and record["kind"] == "create":
            failure = failure or self._boot_failure(vm)
        state, result, done = "IN_PROGRESS", None, None
        if failure is not None:
            state, result = "FAILED", failure
            done = vm.phase_since if vm is not None else record["started_at"]
        elif record["kind"] == "create" and vm is not None and vm.phase is not Phase.BOOTING:
            state, result, done = "SUCCEEDED", self._vm_json(vm), vm.phase_since
        elif record["kind"] == "delete" and (vm is None or vm.phase is Phase.TERMINATED):
            state, result = "SUCCEEDED", {}
            done = vm.phase_since if vm is not None else record["started_at"]
        operation: dict[str, Any] = {
            "operation_id": record["id"],
            "state": state,
            "metadata": {"vm_id": record["vm_id"]} if record["vm_id"] else {},
            "started_at": _rfc3339(record["started_at"]),
            # Required by the spec; empty until the operation ends.
            "completed_at": _rfc3339(done) if done is not None else "",
        }
        if result is not None:
            operation["result"] = result
        return operation

    def _boot_failure(self, vm: SimInstance) -> dict[str, str] | None:
        error = self._cloud.boot_errors.get(vm.id)
        if error is None or vm.phase is not Phase.BOOTING:
            return None
        return {"code": "internal_error", "message": error}

    # -- shapes -----------------------------------------------------------------------

    def _vm_json(self, vm: SimInstance) -> dict[str, Any]:
        now = self.state.clock.now()
        created = _rfc3339(vm.created_at)
        nic = {
            "id": _uuid(f"{vm.id}/nic"),
            "name": f"{vm.name}-nic",
            "network": _uuid(f"{self.project_id}/vpc"),
            "subnet": _uuid(f"{self.project_id}/subnet/{vm.region}"),
            "interface_type": "ethernet",
            "mac_address": _mac(vm.id),
            "external_dns_name": "",
            "ips": [
                {
                    "private_ipv4": {"address": vm.private_ip or ""},
                    "public_ipv4": {
                        "address": vm.public_ip or "",
                        "id": _uuid(f"{vm.id}/public-ip"),
                        "type": "dynamic",
                    },
                }
            ],
        }
        disk = {
            "id": _uuid(f"{vm.id}/os-disk"),
            "name": f"{vm.name}-os",
            "type": "persistent-ssd",
            "size": "128GiB",
            "location": vm.region,
            "block_size": 4096,
            "created_at": created,
            "updated_at": created,
            "serial_number": hashlib.sha256(vm.id.encode()).hexdigest()[:19].upper(),
            "attachment_type": "os",
            "mode": "read-write",
        }
        return {
            "id": vm.id,
            "project_id": self.project_id,
            "name": vm.name,
            "type": vm.instance_type,
            "location": vm.region,
            "state": native_state(vm, now),
            "billing_type": "On-demand",
            "created_at": created,
            "updated_at": _rfc3339(vm.phase_since),
            "disks": [disk],
            "network_interfaces": [nic],
            "host_channel_adapters": [],
            "maintenance_policy": "unspecified",
        }


def _rfc3339(timestamp: float) -> str:
    """RFC 3339 to the second, as Crusoe's answers and examples write times."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mac(vm_id: str) -> str:
    digest = hashlib.sha256(vm_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _page_start(token: str | None) -> int:
    if not token:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(token.encode()).decode()))
    except ValueError:
        raise ApiError(_error(400, "bad_request: invalid next_token")) from None
