"""Both engines are :class:`ds01.ports.ContainerEngine`s: checked by mypy (the
assignments below) and at run time (same methods, same parameters), so a method added to
one engine or to the port and not to the others fails here first."""

from __future__ import annotations

import inspect

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.memory_engine import MemoryEngine
from ds01.ports import ContainerEngine


def _as_port(docker: DockerEngine, memory: MemoryEngine) -> tuple[ContainerEngine, ...]:
    # mypy --strict fails here if either engine stops satisfying the port structurally.
    return docker, memory


def _port_methods() -> list[str]:
    return sorted(
        name
        for name, value in vars(ContainerEngine).items()
        if callable(value) and not name.startswith("_")
    )


def test_port_method_list() -> None:
    assert _port_methods() == [
        "cgroup_driver",
        "containers_of_image",
        "create",
        "diff",
        "exec",
        "exists",
        "image",
        "image_children",
        "info",
        "inspect",
        "interactive_exec",
        "list_containers",
        "list_images",
        "onbuild_triggers",
        "pull",
        "put_archive",
        "read_tree",
        "remove",
        "remove_image",
        "start",
        "stats",
        "stop",
        "top",
    ]


@pytest.mark.parametrize("engine_class", [DockerEngine, MemoryEngine])
@pytest.mark.parametrize("method", _port_methods())
def test_engine_has_the_port_signature(engine_class: type, method: str) -> None:
    want = inspect.signature(getattr(ContainerEngine, method))
    have = inspect.signature(getattr(engine_class, method))
    assert [(p.name, p.kind, p.default) for p in have.parameters.values()] == [
        (p.name, p.kind, p.default) for p in want.parameters.values()
    ]


def test_both_engines_construct_without_a_daemon() -> None:
    # DockerEngine connects lazily: building one never touches Docker.
    assert len(_as_port(DockerEngine(), MemoryEngine())) == 2
