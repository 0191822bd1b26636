"""container.ulimits: what DS01 accepts, the real engine applies (issue 10, finding 10).

``memlock: -1`` is Docker's "unlimited" (AIME sets it). Where this engine can set it,
DS01 accepts it and the container runs with it; where it cannot (an engine without
CAP_SYS_RESOURCE, as on CI), loading the configuration refuses it (exit 2, the key
named) instead of every ``container create`` failing in the engine with exit 1.
"""

from __future__ import annotations

import os

import pytest

from ds01.adapters.engine_rlimits import UNLIMITED, engine_ceilings
from ds01.domain.actor import Actor
from ds01.services.container.create import CreateRequest, CreateService
from tests.integration.conftest import Ds01Env, InspectFn

pytestmark = pytest.mark.docker


def test_memlock_is_accepted_only_as_far_as_the_engine_applies_it(
    ds01_env: Ds01Env, alice: Actor, docker_inspect: InspectFn
) -> None:
    ceiling = (engine_ceilings(os.environ) or {}).get("memlock", UNLIMITED)
    ds01_env.write_config(container={"ulimits": {"stack": 67108864, "memlock": ceiling}})
    result = CreateService(ds01_env.context(alice)).create(
        alice, CreateRequest(name="memlock", framework="pytorch", cpu_only=True)
    )
    data = docker_inspect(result.container)
    assert data["State"]["Running"] is True
    ulimits = {u["Name"]: u for u in data["HostConfig"]["Ulimits"]}
    assert ulimits["memlock"]["Soft"] == ulimits["memlock"]["Hard"] == ceiling
    if ceiling == UNLIMITED:
        return  # this engine applies "unlimited": nothing to refuse
    ds01_env.write_config(container={"ulimits": {"memlock": UNLIMITED}})
    for args in (("limits",), ("container", "create", "memlock2", "pytorch", "--cpu-only")):
        refused = ds01_env.run_cli(alice.name, *args)
        assert refused.returncode == 2, refused.stderr
        assert "container.ulimits.memlock: -1 (unlimited) is more than" in refused.stderr
    assert not ds01_env.engine.exists(f"memlock2._.{alice.uid}")
