"""One set of tests, two engines: the real Docker engine and the in-memory one.

Every test in this folder runs once per engine through the ``rig`` fixture, so the
in-memory engine (which the service unit tests rely on) cannot drift from Docker. The
Docker run uses the hermetic base image and names every container and image it makes
``ds01conf-<random>...``; all of them are removed after each test, whatever happened.
Without an engine the Docker half skips with a reason, except under CI
(``DS01_REQUIRE_DOCKER=1``), where that is a failure.

What differs per engine lives here, never in a test: how an image is made (a build for
Docker, ``add_image`` for memory) and the exec answers the memory engine is seeded with
(what the base image's ``true``, ``false``, ``echo`` and ``sh`` print).
"""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from ds01.adapters.clock import FixedClock
from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.memory_engine import MemoryEngine
from ds01.adapters.memory_images import epoch
from ds01.domain.containers import SLEEP_COMMAND, ContainerSpec
from ds01.domain.engine_types import ImageInfo
from ds01.errors import DS01Error
from ds01.ports import ContainerEngine
from tests.conftest import BASE_IMAGE, reachable_docker_engine

#: The label every container a test makes carries (value: the test's prefix).
OWNER_LABEL = "ds01conf"
SH_SCRIPT = ("sh", "-c", "echo out; echo err >&2; exit 3")

#: What the base image's programs answer, for the memory engine.
EXEC_ANSWERS: dict[tuple[str, ...], tuple[int, bytes, bytes]] = {
    ("true",): (0, b"", b""),
    ("false",): (1, b"", b""),
    ("echo", "hi"): (0, b"hi\n", b""),
    SH_SCRIPT: (3, b"out\n", b"err\n"),
}


@dataclass
class Rig:
    """An engine under test, and how to seed it; names are unique to one test."""

    engine: ContainerEngine
    kind: str
    prefix: str = field(default_factory=lambda: f"ds01conf-{secrets.token_hex(4)}")
    images: list[str] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def spec(self, suffix: str, **changes: Any) -> ContainerSpec:
        """A container that idles (``sleep infinity``) as root, labelled as this test's."""
        base = ContainerSpec(
            tag=self.name(suffix),
            image=BASE_IMAGE,
            labels={OWNER_LABEL: self.prefix},
            user="0:0",
            command=SLEEP_COMMAND,
            entrypoint=(),
        )
        return replace(base, **changes)

    def make_image(
        self,
        suffix: str,
        labels: Mapping[str, str],
        *,
        parent: str = BASE_IMAGE,
        onbuild: Sequence[str] = (),
    ) -> ImageInfo:
        """An image ``<prefix>/<suffix>:latest`` on ``parent`` with ``labels``."""
        tag = f"{self.prefix}/{suffix}:latest"
        self.images.append(tag)
        if isinstance(self.engine, MemoryEngine):
            return self.engine.add_image(tag, labels=labels, parent=parent, onbuild=onbuild)
        assert isinstance(self.engine, DockerEngine)
        lines = [f"FROM {parent}", *(f"ONBUILD {t}" for t in onbuild)]
        dockerfile = io.BytesIO("\n".join(lines).encode())
        events = self.engine.api.build(
            fileobj=dockerfile, tag=tag, labels=dict(labels), rm=True, forcerm=True, decode=True
        )
        errors = [e for e in events if "error" in e]
        assert not errors, errors
        info = self.engine.image(tag)
        assert info is not None
        return info

    def tag(self, image: ImageInfo, suffix: str) -> str:
        """Give ``image`` one more tag."""
        tag = f"{self.prefix}/{suffix}:latest"
        self.images.append(tag)
        if isinstance(self.engine, MemoryEngine):
            record = self.engine.images.find(image.id)
            assert record is not None
            self.engine.images.untag_everywhere(tag)
            record.tags.append(tag)
        else:
            assert isinstance(self.engine, DockerEngine)
            self.engine.api.tag(image.id, f"{self.prefix}/{suffix}", tag="latest")
        return tag

    def clean(self) -> None:
        for info in self.engine.list_containers([f"{OWNER_LABEL}={self.prefix}"]):
            self.engine.remove(info.id, force=True)
        for tag in reversed(self.images):  # children before their parents
            # Already untagged by the test: its image went with its last tag.
            with contextlib.suppress(DS01Error):
                self.engine.remove_image(tag, force=True)


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    return reachable_docker_engine()


def memory_engine() -> MemoryEngine:
    engine = MemoryEngine(FixedClock(epoch()))
    engine.add_image(BASE_IMAGE, size=297_215_034)
    for argv, (code, out, err) in EXEC_ANSWERS.items():
        engine.respond(argv, exit_code=code, stdout=out, stderr=err)
    return engine


@pytest.fixture(params=["memory", "docker"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    if request.param == "memory":
        made = Rig(memory_engine(), "memory")
    else:
        made = Rig(request.getfixturevalue("docker_engine"), "docker")
    try:
        yield made
    finally:
        made.clean()


@pytest.fixture
def engine(rig: Rig) -> ContainerEngine:
    return rig.engine
