"""A hypothesis state machine over the GPU services on the in-memory engine.

Several users create (whole GPUs, MIG slices, CPU-only, with and without ``--wait``),
stop, start and remove containers, the queue runs, and time passes; after every step the
invariants of the allocation hold, read back from the engine as the services read them:

- no device is held by two containers;
- no user holds more GPU equivalents than the policy allows;
- every queue entry is waiting, granted or expired (nothing is lost or half-granted);
- every granted entry's container (while it exists) holds exactly the devices its labels
  and its environment say.

Every refusal must be one of the documented ones (exit 2, 3 or 4); anything else (an
engine error, a bug) fails the run.
"""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ds01.adapters.queue_store import QueueStore
from ds01.domain.queue import QueueState
from ds01.errors import DS01Error
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.context import AppContext
from ds01.services.gpu.holdings import HoldingsService
from ds01.services.gpu.queue import QueueOutcome, QueueService, process_queue_quietly

from .conftest import USERS, Lab, new_lab

WHOLE = "GPU-00000000-1111-4222-8333-444444444444"
MIGGED = "GPU-55555555-6666-4777-8888-999999999999"
# Few devices for three users, so that requests meet, wait and get granted.
SLICES = {"MIG-aaaaaaaa-0000-4000-8000-000000000004": "3g.71gb"}
INVENTORY = {
    "gpus": [
        {
            "index": 0,
            "uuid": WHOLE,
            "name": "NVIDIA H200",
            "memory_mib": 143771,
            "compute_capability": "9.0",
        },
        {
            "index": 1,
            "uuid": MIGGED,
            "name": "NVIDIA H200",
            "memory_mib": 143771,
            "compute_capability": "9.0",
            "mig_enabled": True,
            "total_slices": 7,
            "mig": [{"uuid": u, "profile": p} for u, p in SLICES.items()],
        },
    ]
}
#: Each user may hold one GPU equivalent (a whole GPU, or slices adding up to 7/7).
QUOTA = Fraction(1)
LIMITS = {
    "default_group": "students",
    "defaults": {"max_containers": 3, "max_gpu_equivalents": 1, "gpu_hold_after_stop": "10m"},
    "groups": {"students": {"members": list(USERS)}},
}
NAMES = ("a", "b", "c")
ASKS = ("gpu", "gpu", "gpu", "3g.71gb", "cpu")
DOCUMENTED_EXITS = (2, 3, 4)
#: What the runs did, counted over all examples: the test checks that the interesting
#: paths (grants, expiries, refusals) were really taken, not only that nothing broke.
SEEN: Counter[str] = Counter()


def event(what: str) -> None:
    SEEN[what] += 1


class AllocationMachine(RuleBasedStateMachine):
    aime_dir: Path  # set by the test below (hypothesis machines take no fixtures)

    def __init__(self) -> None:
        super().__init__()
        self.lab: Lab = new_lab(self.aime_dir)
        self.lab.write_inventory(INVENTORY)
        self.lab.write_limits(LIMITS)
        config = self.lab.config_path
        config.write_text(config.read_text() + "queue:\n  max_wait: 1800\n")
        self.queued: set[int] = set()
        #: Containers made by grants, by id: a name can be reused after a remove.
        self.granted: dict[int, str] = {}
        self._contexts: dict[str, AppContext] = {}

    def ctx(self, user: str) -> AppContext:
        """One context per user for the whole run (a CLI command makes a fresh one; here
        that would only re-read the same files thousands of times)."""
        if user not in self._contexts:
            self._contexts[user] = self.lab.ctx(self.lab.users[user])
        ctx = self._contexts[user]
        ctx.warnings.clear()
        return ctx

    def teardown(self) -> None:
        for ctx in self._contexts.values():
            ctx.state_db.close()
        shutil.rmtree(self.lab.root, ignore_errors=True)

    # -- steps ------------------------------------------------------------------------

    def _act(self, user: str, action: str, fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except DS01Error as exc:
            # Only the documented refusals; an engine error or a bug fails the run.
            assert exc.exit_code in DOCUMENTED_EXITS, f"{user} {action}: {exc.code}: {exc}"
            event(f"{action} refused: {exc.code}")
        else:
            event(f"{action} done")

    @rule(
        user=st.sampled_from(USERS),
        name=st.sampled_from(NAMES),
        ask=st.sampled_from(ASKS),
        wait=st.sampled_from((True, True, False)),
    )
    def create(self, user: str, name: str, ask: str, wait: bool) -> None:
        actor = self.lab.users[user]
        flags: dict[str, object] = (
            {"cpu_only": True}
            if ask == "cpu"
            else ({"gpus": 1} if ask == "gpu" else {"gpu_profile": ask})
        )
        request = CreateRequest(
            name=name,
            framework="pytorch",
            cwd=Path(actor.home),
            wait=wait,
            **flags,  # type: ignore[arg-type]
        )

        def go() -> None:
            result = CreateService(self.ctx(user)).create(actor, request)
            if result.queued is not None:
                self.queued.add(result.queued)
                event("create queued")

        self._act(user, "create", go)

    def _pick(self, data: st.DataObject) -> tuple[str, str] | None:
        """An existing container (its owner, its name): steps on containers that exist
        say more than refusals of unknown names."""
        infos = sorted(self.lab.engine.list_containers(), key=lambda c: c.tag)
        if not infos:
            return None
        info = data.draw(st.sampled_from(infos))
        assert info.owner is not None
        return info.owner, info.display_name

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        picked = self._pick(data)
        if picked is None:
            return
        user, name = picked
        actor = self.lab.users[user]
        ctx = self.ctx(user)

        def go() -> None:
            removal = ContainerService(ctx).remove(actor, name, force=True)
            if removal.freed_devices:
                for outcome in process_queue_quietly(ctx):  # as the CLI does
                    self._outcome("queue after remove", outcome)
                assert ctx.warnings == [], ctx.warnings

        self._act(user, "remove", go)

    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        picked = self._pick(data)
        if picked is not None:
            user, name = picked
            actor = self.lab.users[user]
            self._act(user, "stop", lambda: ContainerService(self.ctx(user)).stop(actor, name))

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        picked = self._pick(data)
        if picked is not None:
            user, name = picked
            actor = self.lab.users[user]
            service = ContainerService(self.ctx(user))
            self._act(user, "start", lambda: service.start(actor, name))

    @rule()
    def queue_pass(self) -> None:
        # Root's pass, as every enforcement pass runs it.
        ctx = self.ctx("alice")
        for outcome in QueueService(ctx).process():
            self._outcome("queue", outcome)

    def _outcome(self, where: str, outcome: QueueOutcome) -> None:
        event(f"{where}: {outcome.state}")
        if outcome.state == "granted":
            assert outcome.container is not None
            self.granted[outcome.entry_id] = self.lab.engine.inspect(outcome.container).info.id

    @rule(minutes=st.integers(min_value=1, max_value=90))
    def time_passes(self, minutes: int) -> None:
        self.lab.clock.advance(timedelta(minutes=minutes))

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def no_device_is_held_twice_and_no_user_is_over_quota(self) -> None:
        view = HoldingsService(self.ctx("alice")).holdings()
        seen: dict[str, str] = {}
        per_user: dict[str, Fraction] = {}
        for holding in view.in_force:
            for uuid in holding.device_uuids:
                assert uuid not in seen, f"{uuid} held by {seen[uuid]} and {holding.container}"
                seen[uuid] = holding.container
            per_user[holding.user] = per_user.get(holding.user, Fraction(0)) + holding.equivalents
        for user, held in per_user.items():
            assert held <= QUOTA, f"{user} holds {held} > {QUOTA}"

    @invariant()
    def every_queued_request_is_waiting_granted_or_expired(self) -> None:
        store = QueueStore(self.ctx("alice").state_db)
        states = {row.entry.id: row.entry.state for row in store.rows()}
        assert set(states) == self.queued
        allowed = {QueueState.WAITING, QueueState.GRANTED, QueueState.EXPIRED}
        assert set(states.values()) <= allowed, states

    @invariant()
    def granted_containers_hold_what_their_labels_say(self) -> None:
        ctx = self.ctx("alice")
        engine = self.lab.engine
        view = HoldingsService(ctx).holdings()
        held = {h.container: h.device_uuids for h in view.in_force + view.expired}
        rows = {r.entry.id: r for r in QueueStore(ctx.state_db).rows()}
        for entry_id, container_id in self.granted.items():
            row = rows[entry_id]
            assert row.entry.state is QueueState.GRANTED
            if not engine.exists(container_id):
                continue  # granted, then removed by its owner
            details = engine.inspect(container_id)
            labels = details.info.decoded
            assert labels is not None
            assert details.info.tag == row.container
            assert (labels.user, labels.queue_id) == (row.entry.user, str(entry_id))
            assert labels.gpu_uuids, f"granted #{entry_id} holds no device"
            assert held[details.info.tag] == labels.gpu_uuids
            assert details.env["CUDA_VISIBLE_DEVICES"] == ",".join(labels.gpu_uuids)
        # And no entry is granted without this machine having seen the grant.
        granted_rows = {i for i, r in rows.items() if r.entry.state is QueueState.GRANTED}
        assert granted_rows == set(self.granted)


@pytest.mark.usefixtures("lab")  # skips where the lab cannot run (not root)
def test_allocation_state_machine(aime_dir: Path) -> None:
    AllocationMachine.aime_dir = aime_dir
    SEEN.clear()
    run_state_machine_as_test(
        AllocationMachine,
        settings=settings(
            max_examples=200,
            # The same 200 runs every time: CI is reproducible and the coverage checks
            # below (grants, expiries, refusals seen) cannot pass or fail by luck.
            derandomize=True,
            database=None,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(dict(SEEN))  # shown with -s: what the runs covered
    granted = SEEN["queue: granted"] + SEEN["queue after remove: granted"]
    assert granted > 0, SEEN
    assert SEEN["queue: expired"] > 0, SEEN
    for code in ("no_free_gpu", "gpu_quota_exceeded", "container_exists", "container_limit"):
        assert SEEN[f"create refused: {code}"] > 0, (code, SEEN)
    assert SEEN["start done"] > 0 and SEEN["stop done"] > 0 and SEEN["remove done"] > 0, SEEN
