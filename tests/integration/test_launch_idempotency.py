"""No duplicate launch, per cloud, against the simulated clouds (issue 12, items 1 and 6).

The simulator's faults make the cloud CREATE the machine and then lose the answer:
`drop` (the connection is reset once the create ran), `500-after` (the cloud answers 500
after acting) and `timeout` (it hangs, then drops). The driver must find the machine by
its deterministic name instead of creating a second one; when the cloud's list lags
(`SimState.set_list_lag`), the outcome is reported as unknown
(`LaunchOutcomeUnknownError`) and a later look-up finds the one machine. Look-ups see
machines in every state that still bills. Terminate goes out once per poll, and the
per-cloud details the real APIs document (RunPod's 400 for an unknown pod, Paperspace's
emailPassword, startup script order and create events) hold. Every test ends with zero
spec violations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest

from gpuctl.api import GPUProvider
from gpuctl.controllers.drivers import driver_config
from gpuctl.providers import registry
from gpuctl.providers.base import (
    CapacityType,
    Driver,
    InstanceState,
    LaunchOutcomeUnknownError,
    LaunchRequest,
    TransientError,
)
from gpuctl.sim import SimConfig, Simulator
from gpuctl.sim import crusoe as crusoe_sim
from gpuctl.sim import digitalocean as do_sim
from tests.integration import test_provider_contract as contract
from tests.integration.test_provider_contract import (
    CASES,
    JOIN,
    calls,
    make_driver,
    offer_for,
    request,
)

# The contract suite's fixtures: one simulator per module, a fresh state per test, and
# zero spec violations at the end of every test.
sim = contract.sim
session = contract.session
no_violations = contract.no_violations
cloud = contract.cloud
driver = contract.driver

TERMINATE = {
    "lambda": "terminateInstance",
    "runpod": "DeletePod",
    "paperspace": "machines-delete",
    "crusoe": "deleteInstance",
    "hyperstack": "Delete_VM",
    "digitalocean": "droplets_destroy",
}

# Ids these clouds could have (integers): the drivers send no request for another form.
UNKNOWN_ID = {"hyperstack": "999999", "digitalocean": "999999999"}


def creates(sim: Simulator, cloud: str) -> int:
    return len(calls(sim, cloud, CASES[cloud].create))


@pytest.mark.parametrize("kind", ["drop", "500-after", "timeout"])
async def test_create_whose_answer_is_lost_is_found_by_name(
    sim: Simulator, session: aiohttp.ClientSession, cloud: str, kind: str
) -> None:
    quick = make_driver(sim, session, cloud, requestTimeoutSeconds="0.5")
    sim.faults.add(cloud, operation=CASES[cloud].create, kind=kind, seconds=1.0)
    launched = await quick.launch(request(cloud))
    [made] = sim.instances(cloud)
    assert made.id == launched.id and made.name == "gpuctl-contract"
    await asyncio.sleep(1.1 if kind == "timeout" else 0)  # the hung answer is logged late
    assert creates(sim, cloud) == 1


async def test_lost_answer_and_lagging_list_is_an_unknown_outcome(
    sim: Simulator, driver: Driver, cloud: str
) -> None:
    sim.state.set_list_lag(cloud, 1.0)
    sim.faults.add(cloud, operation=CASES[cloud].create, kind="drop")
    with pytest.raises(LaunchOutcomeUnknownError):
        await driver.launch(request(cloud))
    [made] = sim.instances(cloud)  # the cloud has it; its list does not show it yet
    assert await driver.find_all("gpuctl-contract") == []
    await asyncio.sleep(1.1)
    found = await driver.find("gpuctl-contract")
    assert found is not None and found.id == made.id
    assert (await driver.launch(request(cloud))).id == made.id
    assert creates(sim, cloud) == 1 and len(sim.instances(cloud)) == 1


async def test_create_sends_exactly_one_request(sim: Simulator, driver: Driver, cloud: str) -> None:
    sim.faults.add(cloud, operation=CASES[cloud].create, kind="drop")
    with pytest.raises(LaunchOutcomeUnknownError):
        await driver.create(request(cloud))
    assert creates(sim, cloud) == 1


async def test_refused_create_is_not_an_unknown_outcome(
    sim: Simulator, session: aiohttp.ClientSession, cloud: str
) -> None:
    single = make_driver(sim, session, cloud, retryAttempts="1")
    sim.faults.add(cloud, operation=CASES[cloud].create, kind="429", retry_after=120)
    with pytest.raises(TransientError) as info:
        await single.create(request(cloud))
    assert not isinstance(info.value, LaunchOutcomeUnknownError)
    assert info.value.outcome_unknown is False
    assert sim.instances(cloud) == []


@pytest.mark.parametrize("how", ["interrupt", "stop"])
async def test_find_sees_machines_in_every_state_that_bills(
    sim: Simulator, driver: Driver, cloud: str, how: str
) -> None:
    launched = await driver.launch(request(cloud))
    if how == "interrupt":  # spot reclaimed (Lambda: preempted; RunPod, Paperspace: off)
        sim.state.interrupt(cloud, launched.id)
    else:  # stopped (RunPod: EXITED; Lambda: unhealthy; Paperspace: off)
        sim.state.stop(sim.state.instance(cloud, launched.id))
    found = await driver.find("gpuctl-contract")
    assert found is not None and found.id == launched.id
    assert found.state in (InstanceState.PREEMPTED, InstanceState.STOPPED, InstanceState.FAILED)
    assert [i.id for i in await driver.list_instances("gpuctl-")] == [launched.id]
    # A relaunch under the name adopts it (the controller then terminates and replaces
    # it): never a second machine next to one that still bills.
    assert (await driver.launch(request(cloud))).id == launched.id
    assert creates(sim, cloud) == 1


async def test_twins_are_all_found_the_preferred_first(
    sim: Simulator, driver: Driver, cloud: str
) -> None:
    first = await driver.create(request(cloud))
    second = await driver.create(request(cloud))
    sim.state.interrupt(cloud, first.id)  # the older one no longer serves
    found = await driver.find_all("gpuctl-contract")
    assert [i.id for i in found] == [second.id, first.id]


async def test_terminate_goes_out_once_per_poll(sim: Simulator, driver: Driver, cloud: str) -> None:
    launched = await driver.launch(request(cloud))
    for _ in range(3):
        await driver.terminate(launched.id)
    assert len(calls(sim, cloud, TERMINATE[cloud])) == 1
    unknown = UNKNOWN_ID.get(cloud, "doesnotexist")
    await driver.terminate(unknown)
    await driver.terminate(unknown)  # remembered as gone: not asked again
    assert len(calls(sim, cloud, TERMINATE[cloud])) == 2


async def test_runpod_unknown_pod_answers_400_and_terminate_confirms_with_get(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    runpod = make_driver(sim, session, "runpod")
    await runpod.terminate("doesnotexist")  # DELETE: 400 (as the spec says), GET: 404
    [delete] = [e for e in sim.ledger if e.operation == "DeletePod"]
    assert delete.status == 400
    assert [e.status for e in sim.ledger if e.operation == "GetPod"] == [404]


async def test_runpod_disks_reach_the_cloud(sim: Simulator, session: aiohttp.ClientSession) -> None:
    runpod = make_driver(sim, session, "runpod", containerDiskInGb="80", volumeInGb="0")
    await runpod.launch(request("runpod"))
    [made] = sim.instances("runpod")
    assert made.request["containerDiskInGb"] == 80 and made.request["volumeInGb"] == 0


async def test_lambda_file_systems_reach_the_cloud(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    lam = make_driver(sim, session, "lambda", fileSystemNames="datasets, checkpoints")
    await lam.launch(request("lambda"))
    [made] = sim.instances("lambda")
    assert made.request["file_system_names"] == ["datasets", "checkpoints"]


async def test_paperspace_sends_no_password_mail_and_the_public_ip_type(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    paperspace = make_driver(sim, session, "paperspace", publicIpType="static")
    await paperspace.launch(request("paperspace"))
    [made] = sim.instances("paperspace")
    assert made.request["emailPassword"] is False
    assert made.request["publicIpType"] == "static"
    assert not sim.state.cloud("paperspace").objects.get("password-emails")


async def test_paperspace_failed_provisioning_is_seen_at_once(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    paperspace = make_driver(sim, session, "paperspace")
    sim.state.fail_next_boots("paperspace", error="Out of capacity on host")
    launched = await paperspace.launch(request("paperspace"))
    got = await paperspace.get(launched.id)
    assert got.state is InstanceState.FAILED
    assert "Out of capacity on host" in got.native_state
    assert sim.instance("paperspace", launched.id).state == "provisioning"  # the machine says
    fine = await paperspace.launch(request("paperspace", "gpuctl-fine"))
    assert (await paperspace.get(fine.id)).state is InstanceState.RUNNING


@pytest.fixture
async def slow_sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=2, boot_seconds=0.0, terminate_seconds=0.6)
    async with Simulator(config) as simulator:
        yield simulator


async def test_paperspace_script_goes_only_after_its_machine(
    slow_sim: Simulator, session: aiohttp.ClientSession
) -> None:
    paperspace = make_driver(slow_sim, session, "paperspace")
    launched = await paperspace.launch(request("paperspace"))
    scripts = slow_sim.state.cloud("paperspace").objects["startup-scripts"]
    [script] = scripts.values()
    assert script["assignedMachineIds"] == [launched.id]
    await paperspace.terminate(launched.id)
    await paperspace.cleanup("gpuctl-contract")  # the machine is still stopping: kept
    assert script["dtDeleted"] is None
    await asyncio.sleep(0.7)
    with pytest.raises(Exception, match="404"):
        await paperspace.get(launched.id)
    await paperspace.cleanup("gpuctl-contract")
    assert script["dtDeleted"] is not None and script["assignedMachineIds"] == []
    deleted = [e.time for e in slow_sim.ledger if e.operation == "startupScripts-delete"]
    assert deleted and deleted[0] >= slow_sim.instance("paperspace", launched.id).phase_since
    assert slow_sim.violations == []


async def test_reclaimed_spot_pod_is_adopted_not_duplicated(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    runpod = make_driver(sim, session, "runpod")
    spot = LaunchRequest(
        name="gpuctl-spot",
        offer=attrs.evolve(offer_for("runpod"), capacity_type=CapacityType.SPOT),
        join=JOIN,
    )
    launched = await runpod.launch(spot)
    sim.state.interrupt("runpod", launched.id)  # reclaimed: EXITED, billed for its disk
    again = await runpod.launch(spot)
    assert again.id == launched.id and again.state is InstanceState.PREEMPTED
    assert creates(sim, "runpod") == 1


# Every field of a GPUProvider's per-cloud block, and the create-request field it must
# arrive as at the cloud (`gpuctl.controllers.drivers.driver_config` -> the driver).
PROVIDER_BLOCKS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "lambda": (
        {"sshKeyName": "gpuctl", "image": "lambda-stack-22-04", "fileSystemNames": ["data"]},
        {"ssh_key_names": ["gpuctl"], "image": {"family": "lambda-stack-22-04"},
         "file_system_names": ["data"]},
    ),
    "runpod": (
        {"imageName": "ghcr.io/gpuctl/node:1", "cloudType": "SECURE", "containerDiskGB": 80,
         "volumeGB": 0},
        {"imageName": "ghcr.io/gpuctl/node:1", "cloudType": "SECURE", "containerDiskInGb": 80,
         "volumeInGb": 0},
    ),
    "paperspace": (
        {"templateId": "tkni3aa4", "diskSizeGB": 250, "publicIpType": "none"},
        {"templateId": "tkni3aa4", "diskSize": 250, "publicIpType": "none",
         "emailPassword": False},
    ),
    # projectId is in every VM path: a wrong one would be refused (403).
    "crusoe": (
        {"sshPublicKey": "ssh-ed25519 AAAAC3Nza gpuctl", "projectId": crusoe_sim.project_id(1),
         "image": "ubuntu22.04-nvidia-sxm-docker:latest"},
        {"ssh_public_key": "ssh-ed25519 AAAAC3Nza gpuctl",
         "image": "ubuntu22.04-nvidia-sxm-docker:latest",
         "reservation_specification": {"selection_strategy": "on_demand"}},
    ),
    # sshKeyName is missing in the new environment: imported under that name from
    # sshPublicKey. The firewall fields of DigitalOcean are checked in
    # tests/unit/test_providers_digitalocean.py (the firewall is not in the create).
    "hyperstack": (
        {"sshKeyName": "ops", "sshPublicKey": "ssh-ed25519 AAAAC3Nza ops",
         "image": "Ubuntu Server 24.04 LTS R570 CUDA 12.8", "environmentPrefix": "team-",
         "assignFloatingIP": False, "kubeletSourceCIDR": "10.0.0.0/8"},
        {"key_name": "ops", "image_name": "Ubuntu Server 24.04 LTS R570 CUDA 12.8",
         "environment_name": "team-us-1", "assign_floating_ip": False,
         "security_rules": [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                             "remote_ip_prefix": "10.0.0.0/8", "port_range_min": 10250,
                             "port_range_max": 10250}]},
    ),
    "digitalocean": (
        {"sshKeys": [do_sim.key_fingerprint("gpuctl")], "image": "ubuntu-22-04-x64",
         "firewall": True, "kubeletSourceCIDR": "10.0.0.0/8", "sshSourceCIDR": "10.1.0.0/16"},
        {"ssh_keys": [do_sim.key_fingerprint("gpuctl")], "image": "ubuntu-22-04-x64",
         "tags": ["gpuctl-p-digitalocean", "gpuctl-io-t:c"]},
    ),
}  # fmt: skip


async def test_every_gpuprovider_field_reaches_the_cloud(
    sim: Simulator, session: aiohttp.ClientSession, cloud: str
) -> None:
    block, sent = PROVIDER_BLOCKS[cloud]
    provider = GPUProvider.from_dict(
        {
            "apiVersion": "gpuctl.io/v1alpha1",
            "kind": "GPUProvider",
            "metadata": {"name": f"p-{cloud}"},
            "spec": {
                "type": cloud,
                "endpoint": sim.endpoint(cloud),
                "credentialsSecretRef": {"namespace": "ns", "name": "s"},
                "bootstrap": {"method": "kubeadm", "apiServerEndpoint": "10.0.0.1:6443"},
                cloud: block,
            },
        }
    )
    spec_fields = {f.name for f in attrs.fields(type(getattr(provider.spec, _attr(cloud))))}
    assert len(block) == len(spec_fields), "a per-cloud field this test does not cover"
    config = driver_config(provider, sim.api_key(cloud))
    config = attrs.evolve(config, options={**config.options, **contract.FAST})
    await registry.build_driver(config, session).launch(request(cloud))
    [made] = sim.instances(cloud)
    assert {key: made.request.get(key) for key in sent} == sent


def _attr(cloud: str) -> str:
    return "lambda_" if cloud == "lambda" else cloud
