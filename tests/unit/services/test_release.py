"""What frees a GPU and what happens next: remove (the devices come back, the caller runs
the queue, the head is granted), stop (the hold lasts ``gpu_hold_after_stop``), start
(taking the devices back, or refused when they went to someone else)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ds01.errors import NoCapacityError, RefusedError, UsageError
from ds01.services.container.create import CreateRequest, CreateResult, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.gpu.queue import QueueService, process_queue_quietly

from .conftest import H200, Lab


def create(lab: Lab, user: str, name: str, **flags: object) -> CreateResult:
    actor = lab.users[user]
    request = CreateRequest(name=name, cwd=Path(actor.home), framework="pytorch", **flags)  # type: ignore[arg-type]
    return CreateService(lab.ctx(actor)).create(actor, request)


def holders(lab: Lab) -> dict[str, tuple[str, ...]]:
    view = HoldingsService(lab.ctx(lab.users["alice"])).holdings()
    return {h.container: h.device_uuids for h in view.in_force}


def test_remove_returns_the_devices_and_the_queue_grants_its_head(lab: Lab) -> None:
    alice, bob = lab.users["alice"], lab.users["bob"]
    first = create(lab, "alice", "first")
    queued = create(lab, "bob", "second", wait=True)
    assert queued.queued is not None

    ctx = lab.ctx(alice)
    removal = ContainerService(ctx).remove(alice, "first", force=True)
    assert removal.freed_devices == (H200,)
    assert removal.details.info.tag == first.container
    assert not lab.engine.exists(first.container)
    # Removing does not run the queue itself: until the caller does, bob waits.
    assert holders(lab) == {}
    outcomes = process_queue_quietly(ctx)
    tag = f"second._.{bob.uid}"
    assert [(o.entry_id, o.user, o.state, o.container) for o in outcomes] == [
        (queued.queued, "bob", "granted", tag)
    ]
    assert holders(lab) == {tag: (H200,)}
    labels = lab.engine.inspect(tag).info.decoded
    assert labels is not None and labels.queue_id == str(queued.queued)
    assert QueueService(ctx).store.waiting() == []


def test_removing_a_cpu_container_frees_nothing(lab: Lab) -> None:
    alice = lab.users["alice"]
    create(lab, "alice", "cpu", cpu_only=True)
    assert ContainerService(lab.ctx(alice)).remove(alice, "cpu", force=True).freed_devices == ()


def test_a_running_container_is_not_removed_without_force(lab: Lab) -> None:
    alice = lab.users["alice"]
    create(lab, "alice", "busy", cpu_only=True)
    with pytest.raises(UsageError, match=r"The container 'busy' is running\.") as caught:
        ContainerService(lab.ctx(alice)).remove(alice, "busy")
    assert caught.value.code == "container_running"


def test_bob_cannot_remove_alices_container(lab: Lab) -> None:
    bob = lab.users["bob"]
    made = create(lab, "alice", "mine")
    with pytest.raises(RefusedError, match="belongs to alice, not you") as caught:
        ContainerService(lab.ctx(bob)).remove(bob, made.container, force=True)
    assert caught.value.code == "not_owner"
    assert lab.engine.exists(made.container)


def test_stop_keeps_the_hold_until_it_runs_out(lab: Lab) -> None:
    alice = lab.users["alice"]
    made = create(lab, "alice", "demo")
    ContainerService(lab.ctx(alice)).stop(alice, "demo")
    assert lab.engine.inspect(made.container).info.state.value == "exited"
    assert holders(lab) == {made.container: (H200,)}  # within gpu_hold_after_stop (15 min)
    with pytest.raises(NoCapacityError, match="No free GPU") as caught:
        create(lab, "bob", "other")
    assert caught.value.code == "no_free_gpu"
    lab.clock.advance(timedelta(minutes=15, seconds=1))
    assert holders(lab) == {}
    assert create(lab, "bob", "other").gpus == (H200,)


def test_start_takes_its_gpu_back_or_says_who_has_it(lab: Lab) -> None:
    alice = lab.users["alice"]
    made = create(lab, "alice", "demo")
    service = ContainerService(lab.ctx(alice))
    service.stop(alice, "demo")
    service.start(alice, "demo")  # still within its hold: started with its GPU
    assert lab.engine.inspect(made.container).info.state.value == "running"

    service.stop(alice, "demo")
    lab.clock.advance(timedelta(hours=1))
    create(lab, "bob", "taker")  # the released GPU goes to bob
    with pytest.raises(NoCapacityError, match="is now used by bob") as caught:
        ContainerService(lab.ctx(alice)).start(alice, "demo")
    assert caught.value.code == "device_reassigned"
    assert lab.engine.inspect(made.container).info.state.value == "exited"
