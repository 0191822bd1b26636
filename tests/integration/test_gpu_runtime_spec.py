"""The container DS01 asks Docker for under ``gpu.runtime: nvidia``, exactly, without a GPU.

Every other integration test runs with ``runtime: none``, so the device requests sent under
``nvidia`` are checked here: the real create path (policy, allocation, labels, the real
engine) runs with an engine whose low-level ``create_container`` call is recorded on its
way to Docker. The host has no NVIDIA runtime, so Docker may refuse the container at create
or at start; either way the call DS01 made is what is asserted, and no container is left.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.domain.actor import Actor
from ds01.errors import DS01Error
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.context import AppContext
from tests.integration.conftest import ONE_H200, Ds01Env

UUID = ONE_H200["gpus"][0]["uuid"]


class RecordingEngine(DockerEngine):
    """The real engine; every low-level ``create_container`` call is kept, then made."""

    def __init__(self) -> None:
        super().__init__()
        self.create_calls: list[dict[str, Any]] = []
        real = self.api.create_container

        def record(**kwargs: Any) -> Any:
            self.create_calls.append(kwargs)
            return real(**kwargs)

        self.api.create_container = record


@pytest.mark.docker
def test_nvidia_runtime_requests_the_allocated_device_by_uuid(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    ds01_env.write_config(gpu={"runtime": "nvidia"})
    recording = RecordingEngine()
    ctx = AppContext(settings=ds01_env.settings(), actor=alice, engine=recording)
    # No NVIDIA runtime here: Docker may refuse the container; the request is what is checked.
    with contextlib.suppress(DS01Error):
        CreateService(ctx).create(alice, CreateRequest(name="gpuspec", framework="pytorch"))
    (call,) = recording.create_calls
    host = call["host_config"]
    assert host["DeviceRequests"] == [
        {"Driver": "", "Count": 0, "DeviceIDs": [UUID], "Capabilities": [["gpu"]], "Options": {}}
    ]
    env = call["environment"]
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == (UUID, UUID)
    labels = call["labels"]
    assert labels["aime.mlc.GPUS"] == f"device={UUID}"
    assert labels["aime.mlc.GPU_UUIDS"] == UUID
    assert labels["aime.mlc.GPU_EQUIVALENTS"] == "1"
    assert "Runtime" not in host  # devices by request (--gpus), not a runtime override


@pytest.mark.docker
def test_runtime_none_requests_no_device_and_hides_all_gpus(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    recording = RecordingEngine()
    ctx = AppContext(settings=ds01_env.settings(), actor=alice, engine=recording)
    CreateService(ctx).create(
        alice, CreateRequest(name="cpuspec", framework="pytorch", cpu_only=True)
    )
    (call,) = recording.create_calls
    assert call["host_config"].get("DeviceRequests") is None
    env = call["environment"]
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("void", "")
