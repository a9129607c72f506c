"""Money safety end to end: no duplicate launch, every dollar in the ledger (issue 12).

The simulated clouds create the machine and then lose the answer (fault `drop`: the
connection is reset once the create ran) while their lists lag their writes
(`SimState.set_list_lag`), so the operator's look-up right after the create sees
nothing. Per cloud, the request must still end with exactly one machine, one create,
the uncertain attempt recorded in status (`Launched=Unknown`) before anything else and
the machine adopted once it is listed — also when the operator is SIGKILLed right after
the lost answer (crash point `after-launch-unknown`), before it could record anything.

Then the money: a machine the cloud created whose launch the operator never recorded
(SIGKILL at `after-launch`) is found by name, recorded and billed from the attempt's
start — when the request is deleted while no operator runs (teardown) and when the
operator comes back to it (recovery). The cost ledger and `gpuctl cost` must agree with
the simulated cloud's own billing (`SimState.billed_usd`) to the cent.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from gpuctl.controllers import naming
from gpuctl.controllers.ledger import Ledger
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import EVENTS
from gpuctl.sim import Simulator
from gpuctl.sim.model import SimInstance
from tests.e2e.conftest import (
    NAMESPACE,
    Env,
    delete_and_wait,
    operator_config,
    start_operator,
    wait_for,
    wait_phase,
)
from tests.e2e.test_cli_offers import cli
from tests.processes import wait_gone
from tests.wheel import Installed, run_args, start_gpuctl

CLOUDS = ("lambda", "runpod", "paperspace")
CREATE = {"lambda": "launchInstance", "runpod": "CreatePod", "paperspace": "machines-create"}
A6000 = {"gpu": {"type": "A6000-48GB", "count": 1}}
# The cloud's list lags its writes by this much: the look-up right after a lost answer
# finds nothing, a later one does.
LAG = 3.0
SETTLE = datetime.timedelta(seconds=20)  # > LAG: found before the operator would relaunch
CENT = Decimal("0.01")


async def create(api: Client, env: Env, name: str, cloud: str) -> tuple[str, str]:
    body = {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": f"{name}-{env.suffix}"},
        "spec": {**A6000, "providers": [env.providers[cloud]]},
    }
    created = await api.create(GPUNODEREQUESTS, body)
    return str(created["metadata"]["name"]), str(created["metadata"]["uid"])


def machines(sim: Simulator, env: Env, cloud: str, uid: str) -> list[SimInstance]:
    prefix = naming.prefix(env.cluster) + naming.uid_part(uid) + "-"
    return [i for i in sim.instances(cloud) if i.name.startswith(prefix)]


def creates(sim: Simulator, cloud: str) -> int:
    return sum(1 for e in sim.ledger if e.cloud == cloud and e.operation == CREATE[cloud])


async def reasons(api: Client, name: str) -> list[str]:
    listed = await api.list(
        EVENTS, namespace="default", field_selector=f"involvedObject.name={name}"
    )
    return [str(e["reason"]) for e in listed["items"]]


def start(
    installed: Installed, env: Env, cp: ControlPlane, log: Path, crash: str | None = None
) -> subprocess.Popen[bytes]:
    config = operator_config(env, cp, gc_grace=datetime.timedelta(seconds=30))
    config = attrs.evolve(config, settings=attrs.evolve(config.settings, launch_settle=SETTLE))
    crash_env = {"GPUCTL_CRASH_AT": crash} if crash else None
    return start_gpuctl(installed, run_args(config), log, crash_env).process


async def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 40)
            except subprocess.TimeoutExpired:
                proc.kill()


async def killed(proc: subprocess.Popen[bytes], log: Path) -> None:
    code = await asyncio.to_thread(proc.wait, 90)
    assert code == -signal.SIGKILL, log.read_text()[-3000:]


# -- no duplicate launch ------------------------------------------------------------------


@pytest.mark.parametrize("cloud", CLOUDS)
async def test_lost_create_answer_is_recorded_then_adopted_not_duplicated(
    cloud: str, api: Client, sim: Simulator, env: Env, control_plane: ControlPlane
) -> None:
    sim.state.set_list_lag(cloud, LAG)
    sim.faults.add(cloud, operation=CREATE[cloud], kind="drop")
    config = operator_config(env, control_plane)
    config = attrs.evolve(config, settings=attrs.evolve(config.settings, launch_settle=SETTLE))
    running = await start_operator(config)
    try:
        name, uid = await create(api, env, "lost", cloud)
        obj = await wait_phase(api, name, "Ready", 120)
        status = obj["status"]
        assert status["attempt"] == 1
        launched = {c["type"]: c for c in status["conditions"]}["Launched"]
        assert (launched["status"], launched["reason"]) == ("True", "Adopted")
        [machine] = machines(sim, env, cloud, uid)
        assert status["instance"]["id"] == machine.id
        assert creates(sim, cloud) == 1
        seen = await reasons(api, name)
        assert "LaunchOutcomeUnknown" in seen and "Adopted" in seen, seen
        await delete_and_wait(api, name)
        assert [m.phase.live for m in machines(sim, env, cloud, uid)] == [False]
        assert not sim.violations
    finally:
        await running.halt()


@pytest.mark.parametrize("cloud", CLOUDS)
async def test_sigkill_right_after_a_lost_create_answer_leaves_one_machine(
    cloud: str,
    api: Client,
    sim: Simulator,
    env: Env,
    control_plane: ControlPlane,
    tmp_path: Path,
    gpuctl_wheel: Installed,
) -> None:
    # The list lags longer than the restart takes: the new operator, which knows
    # nothing of the lost create, must keep looking rather than launch again.
    sim.state.set_list_lag(cloud, 12.0)
    sim.faults.add(cloud, operation=CREATE[cloud], kind="drop")
    log = tmp_path / "operator.log"
    first = start(gpuctl_wheel, env, control_plane, log, "after-launch-unknown")
    survivor: subprocess.Popen[bytes] | None = None
    try:
        name, uid = await create(api, env, "killed", cloud)
        await killed(first, log)
        assert len(machines(sim, env, cloud, uid)) == 1  # the cloud has it; nobody recorded it
        survivor = start(gpuctl_wheel, env, control_plane, log)
        obj = await wait_phase(api, name, "Ready", 120)
        assert obj["status"]["attempt"] == 1
        [machine] = machines(sim, env, cloud, uid)
        assert obj["status"]["instance"]["id"] == machine.id
        assert creates(sim, cloud) == 1
        await delete_and_wait(api, name)
        assert [m.phase.live for m in machines(sim, env, cloud, uid)] == [False]
        assert not sim.violations
    finally:
        await stop(first, survivor)
        assert await asyncio.to_thread(wait_gone, f"--cluster-name {env.cluster}", 5) == []


# -- every dollar accounted --------------------------------------------------------------


async def _ledger_row(api: Client, control_plane: ControlPlane, uid: str) -> tuple[Any, Any]:
    [entry] = [e for e in await Ledger(api, NAMESPACE).read() if e.uid == uid]
    code, out = await cli("cost", "--kubeconfig", str(control_plane.kubeconfig), "-o", "json")
    assert code == 0
    [row] = [r for r in json.loads(out)["requests"] if r["uid"] == uid]
    return entry, row


@pytest.mark.parametrize("when", ["teardown", "recovery"])
async def test_a_machine_nobody_recorded_is_billed_to_the_cent(
    when: str,
    api: Client,
    sim: Simulator,
    env: Env,
    control_plane: ControlPlane,
    tmp_path: Path,
    gpuctl_wheel: Installed,
) -> None:
    # $7.20/h is 0.2 cents a second: a machine of ~30 s costs ~6 cents, and billing
    # none of it (what gpuctl did) misses by far more than the cent allowed; status
    # times are whole seconds, so a few seconds of slack stay within it.
    sim.state.set_price("lambda", "gpu_1x_a6000", 7.20)
    log = tmp_path / "operator.log"
    first = start(gpuctl_wheel, env, control_plane, log, "after-launch")
    survivor: subprocess.Popen[bytes] | None = None
    try:
        name, uid = await create(api, env, f"money-{when}", "lambda")
        await killed(first, log)  # the cloud created the machine; status does not know it
        [machine] = machines(sim, env, "lambda", uid)
        if when == "teardown":
            await asyncio.sleep(20)  # it bills while no operator runs
            await api.delete(GPUNODEREQUESTS, name)  # deleted before anyone recorded it
            survivor = start(gpuctl_wheel, env, control_plane, log)
            await wait_for(lambda: _gone(api, name), 90, f"{name} deleted")
            assert "FoundByName" in await reasons(api, name)
        else:
            survivor = start(gpuctl_wheel, env, control_plane, log)
            obj = await wait_phase(api, name, "Ready", 120)
            assert obj["status"]["instance"]["id"] == machine.id
            await asyncio.sleep(15)
            await delete_and_wait(api, name, 90)
        [after] = machines(sim, env, "lambda", uid)
        assert after.id == machine.id and not after.phase.live
        billed = Decimal(str(sim.state.billed_usd("lambda", machine.id)))
        entry, row = await _ledger_row(api, control_plane, uid)
        print(f"cloud billed ${billed:.4f}, ledger ${entry.accrued_usd}")
        assert billed > 3 * CENT, billed  # the machine ran long enough to matter
        assert abs(entry.accrued_usd - billed) <= CENT, (entry, billed)
        assert Decimal(row["accruedUSD"]) == entry.accrued_usd and row["state"] == "finished"
        assert entry.price_per_hour == Decimal("7.20")
        assert creates(sim, "lambda") == 1
    finally:
        await stop(first, survivor)
        assert await asyncio.to_thread(wait_gone, f"--cluster-name {env.cluster}", 5) == []


async def _gone(api: Client, name: str) -> bool:
    listed = await api.list(GPUNODEREQUESTS, field_selector=f"metadata.name={name}")
    return not listed["items"]


async def test_paperspace_failed_provisioning_is_replaced_at_once_and_scripts_go_after(
    api: Client, sim: Simulator, env: Env, operator: object
) -> None:
    """Paperspace reports a failed provisioning only in the machine's create event (the
    machine stays `provisioning`): gpuctl reads it and replaces the machine at the next
    poll, not after the registration timeout (30 s here). Every startup script goes, and
    only after its machine is gone."""
    sim.state.fail_next_boots("paperspace", error="Failed to allocate GPU")
    name, uid = await create(api, env, "psfail", "paperspace")
    started = asyncio.get_running_loop().time()
    obj = await wait_phase(api, name, "Ready", 120)
    assert asyncio.get_running_loop().time() - started < 25  # well inside the 30 s timeout
    status = obj["status"]
    assert status["attempt"] == 2
    [failed] = status["failedOffers"]
    assert failed["reason"] == "Interrupted" and "Failed to allocate GPU" in failed["message"]
    first, second = machines(sim, env, "paperspace", uid)
    assert not first.phase.live and status["instance"]["id"] == second.id
    await delete_and_wait(api, name)
    scripts = sim.state.cloud("paperspace").objects["startup-scripts"].values()
    mine = [s for s in scripts if s["name"] in (first.name, second.name)]
    await wait_for(lambda: _all_deleted(mine), 20, "both startup scripts deleted")
    deletes = {
        e.path.rsplit("/", 1)[1]: e.time
        for e in sim.ledger
        if e.operation == "startupScripts-delete" and e.status == 200
    }
    for script, machine in zip(mine, (first, second), strict=True):
        assert deletes[script["id"]] >= machine.phase_since  # after the machine was gone
    assert not sim.violations


async def _all_deleted(scripts: list[dict[str, Any]]) -> bool:
    return all(s["dtDeleted"] is not None for s in scripts)
