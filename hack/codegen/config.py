"""Which operations gpuctl uses from each spec, and where their clients go.

To add an operation: append its `(METHOD, path)` to the client's `operations`,
run `make generate`, and, if an inline schema got an awkward name, map it in
`aliases` (generated name -> preferred name). See docs/codegen.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LAMBDA = "gpuctl/providers/lambdacloud/_generated"
RUNPOD = "gpuctl/providers/runpod/_generated"
PAPERSPACE = "gpuctl/providers/paperspace/_generated"
CRUSOE = "gpuctl/providers/crusoe/_generated"
HYPERSTACK = "gpuctl/providers/hyperstack/_generated"
DIGITALOCEAN = "gpuctl/providers/digitalocean/_generated"


@dataclass(frozen=True)
class Client:
    title: str
    spec: str  # the generated 3.0 spec the client is built from
    models: str
    operations: str
    selected: tuple[tuple[str, str], ...]  # (METHOD, path template)
    # Error bodies the cloud documents: (class name, JSON pointer to the schema).
    errors: tuple[tuple[str, str], ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)


CLIENTS = (
    Client(
        title="Lambda Cloud API",
        spec=f"{LAMBDA}/openapi.json",
        models=f"{LAMBDA}/models.py",
        operations=f"{LAMBDA}/operations.py",
        selected=(
            ("GET", "/api/v1/instance-types"),
            ("GET", "/api/v1/regions"),
            ("POST", "/api/v1/instance-operations/launch"),
            ("POST", "/api/v1/instance-operations/terminate"),
            ("GET", "/api/v1/instances"),
            ("GET", "/api/v1/instances/{id}"),
            ("GET", "/api/v1/ssh-keys"),
        ),
        # Every error is {"error": {code, message, suggestion?}}; the launch 400
        # lists the most variants, merged into one `ApiError` with all codes.
        errors=(
            (
                "ApiErrorResponse",
                "#/paths/~1api~1v1~1instance-operations~1launch/post/responses/400"
                "/content/application~1json/schema",
            ),
        ),
        aliases={"ApiErrorResponseError": "ApiError", "ApiErrorResponseErrorCode": "ApiErrorCode"},
    ),
    Client(
        title="RunPod REST API v1",
        spec=f"{RUNPOD}/openapi_v1.json",
        models=f"{RUNPOD}/models_v1.py",
        operations=f"{RUNPOD}/operations_v1.py",
        selected=(
            ("POST", "/pods"),
            ("GET", "/pods"),
            ("GET", "/pods/{podId}"),
            ("DELETE", "/pods/{podId}"),
        ),
    ),
    Client(
        title="RunPod REST API v2",
        spec=f"{RUNPOD}/openapi_v2.json",
        models=f"{RUNPOD}/models_v2.py",
        operations=f"{RUNPOD}/operations_v2.py",
        selected=(
            ("GET", "/v2/catalog/gpus"),
            ("GET", "/v2/catalog/datacenters"),
        ),
        errors=(("ErrorResponse", "#/components/schemas/ErrorResponse"),),
    ),
    Client(
        title="Paperspace API",
        spec=f"{PAPERSPACE}/openapi.json",
        models=f"{PAPERSPACE}/models.py",
        operations=f"{PAPERSPACE}/operations.py",
        selected=(
            ("GET", "/machines/{id}"),
            ("GET", "/machines"),
            ("POST", "/machines"),
            ("DELETE", "/machines/{id}"),
            ("POST", "/startup-scripts"),
            ("GET", "/startup-scripts"),
            ("DELETE", "/startup-scripts/{id}"),
            ("POST", "/startup-scripts/{id}/unassign"),
            ("GET", "/machine-events"),
            ("GET", "/machine-events/{id}"),
            ("GET", "/machine-availability"),
            ("GET", "/auth/session"),
            ("GET", "/os-templates"),
        ),
        errors=(("Error", "#/components/responses/error/content/application~1json/schema"),),
        # Paperspace declares every schema inline; name the ones drivers handle.
        aliases={
            "MachinesGetResponse": "Machine",
            "MachinesCreateResponse": "MachineEventResponse",  # {event, data: machine}
            "MachineEventResponseEvent": "MachineEvent",
            "StartupScriptsCreateResponse": "StartupScript",
            "AuthSessionResponse": "Session",
            "OsTemplatesListResponseItemsItem": "OsTemplate",
        },
    ),
    Client(
        title="Hyperstack Infrahub API",
        spec=f"{HYPERSTACK}/openapi.json",
        models=f"{HYPERSTACK}/models.py",
        operations=f"{HYPERSTACK}/operations.py",
        selected=(
            ("GET", "/core/flavors"),
            ("GET", "/core/stocks"),
            ("GET", "/pricebook"),
            ("GET", "/core/environments"),
            ("POST", "/core/environments"),
            ("GET", "/core/keypairs"),
            ("POST", "/core/keypairs"),
            ("POST", "/core/virtual-machines"),
            ("GET", "/core/virtual-machines"),
            ("GET", "/core/virtual-machines/{vm_id}"),
            ("DELETE", "/core/virtual-machines/{vm_id}"),
        ),
        errors=(("ErrorResponseModel", "#/components/schemas/ErrorResponseModel"),),
    ),
    Client(
        title="DigitalOcean API v2",
        spec=f"{DIGITALOCEAN}/openapi.json",
        models=f"{DIGITALOCEAN}/models.py",
        operations=f"{DIGITALOCEAN}/operations.py",
        selected=(
            ("GET", "/v2/account"),
            ("GET", "/v2/account/keys"),
            ("GET", "/v2/sizes"),
            ("POST", "/v2/droplets"),
            ("GET", "/v2/droplets"),
            ("GET", "/v2/droplets/{droplet_id}"),
            ("DELETE", "/v2/droplets/{droplet_id}"),
            ("GET", "/v2/firewalls"),
            ("POST", "/v2/firewalls"),
        ),
        errors=(("Error", "#/components/schemas/error"),),
    ),
    Client(
        title="Crusoe Cloud API",
        spec=f"{CRUSOE}/openapi.json",
        models=f"{CRUSOE}/models.py",
        operations=f"{CRUSOE}/operations.py",
        selected=(
            ("GET", "/organizations/projects"),
            ("GET", "/capacities"),
            ("POST", "/projects/{project_id}/compute/vms/instances"),
            ("GET", "/projects/{project_id}/compute/vms/instances"),
            ("GET", "/projects/{project_id}/compute/vms/instances/{vm_id}"),
            ("DELETE", "/projects/{project_id}/compute/vms/instances/{vm_id}"),
            ("GET", "/projects/{project_id}/compute/vms/instances/operations/{operation_id}"),
        ),
        # Every error answer is {code, message} (go-swagger's badReqError, authError, ...).
        errors=(
            (
                "ErrorResponse",
                "#/components/responses/badReqError/content/application~1json/schema",
            ),
        ),
    ),
)
