"""Integration fixtures: a real Docker engine, real Linux users, a private DS01 setup.

Every test here talks to the Docker engine for everything Docker does. Without an engine
the tests skip with a reason, except under CI (``DS01_REQUIRE_DOCKER=1``), where a
missing engine is a failure: integration tests must run in CI, not skip.

Test users are real accounts (``ds01t-*``, made with ``useradd``), because DS01 acts as
the calling Linux user: uid, gid, groups and home all matter. Every container a test
user owns is removed after each test, whatever happened.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.config.settings import Settings
from ds01.domain.actor import Actor
from ds01.domain.labels import AIME
from ds01.services.context import AppContext
from tests.conftest import FIXTURES, PROJECT_ROOT, reachable_docker_engine

#: The catalog image newest for CUDA_ADA in AIME's v2 catalog, tagged by hermetic-base.sh.
CATALOG_IMAGE_ADA = "aimehub/pytorch-2.8.0-aime-cuda12.6.3"
USER_PREFIX = "ds01t-"
TEST_ADMIN_GROUP = "ds01t-admins"
TEST_USERS = {
    "ds01t-alice": "ds01t-students",
    "ds01t-bob": "ds01t-students",
    "ds01t-carol": "ds01t-researchers",
    "ds01t-dave": "ds01t-researchers",
}
DS01_BIN = PROJECT_ROOT / ".venv" / "bin" / "ds01"


def _require_docker() -> bool:
    return os.environ.get("DS01_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="session")
def engine() -> DockerEngine:
    return reachable_docker_engine()


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="session")
def linux_users(engine: DockerEngine) -> dict[str, Actor]:
    """Real unprivileged accounts for the tests (created once, kept between runs)."""
    if os.geteuid() != 0:
        pytest.skip("creating test users needs root (CI runs as root)")
    for group in sorted(set(TEST_USERS.values())):
        try:
            grp.getgrnam(group)
        except KeyError:
            _run(["groupadd", group])
    docker_group = "docker"
    try:
        grp.getgrnam(docker_group)
    except KeyError:
        _run(["groupadd", docker_group])
    for user, group in TEST_USERS.items():
        try:
            pwd.getpwnam(user)
        except KeyError:
            _run(
                [
                    "useradd",
                    "--create-home",
                    "--shell",
                    "/bin/bash",
                    "--groups",
                    f"{group},{docker_group}",
                    user,
                ]
            )
    return {user: actor_for_user(user) for user in TEST_USERS}


def remove_test_containers(engine: DockerEngine) -> None:
    for info in engine.list_containers([AIME]):
        owner = info.owner or ""
        if owner.startswith(USER_PREFIX):
            engine.remove(info.id, force=True)


@dataclass
class Ds01Env:
    """A private DS01 installation: config file, state dir, limits, inventory."""

    root: Path
    config_path: Path
    limits_path: Path
    inventory_path: Path
    engine: DockerEngine

    def settings(self) -> Settings:
        from ds01.config.loader import load_settings

        return load_settings(self.config_path)

    def context(self, actor: Actor, **kwargs: Any) -> AppContext:
        return AppContext(settings=self.settings(), actor=actor, engine=self.engine, **kwargs)

    def write_config(self, **overrides: Any) -> None:
        data = yaml.safe_load(self.config_path.read_text())
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        self.config_path.write_text(yaml.safe_dump(data))

    def write_limits(self, policy: dict[str, Any]) -> None:
        self.limits_path.write_text(yaml.safe_dump(policy))

    def write_inventory(self, inventory: dict[str, Any]) -> None:
        self.inventory_path.write_text(json.dumps(inventory))

    def run_cli(
        self, user: str | None, *args: str, input_text: str | None = None, timeout: int = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed ``ds01`` as a real Linux user (``runuser``), like users do."""
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "DS01_CONFIG": str(self.config_path),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        argv = [str(DS01_BIN), *args]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        return subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            input=input_text,
            timeout=timeout,
            check=False,
        )


DEFAULT_LIMITS: dict[str, Any] = {
    "default_group": "ds01t-students",
    "defaults": {"max_containers": 5},
    "groups": {
        "ds01t-students": {"unix_group": "ds01t-students"},
        "ds01t-researchers": {"unix_group": "ds01t-researchers"},
    },
}

ONE_H200 = {
    "gpus": [
        {
            "index": 0,
            "uuid": "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d",
            "name": "NVIDIA H200",
            "memory_mib": 143771,
            "compute_capability": "9.0",
        }
    ]
}


@pytest.fixture
def ds01_env(
    tmp_path_factory: pytest.TempPathFactory, engine: DockerEngine, linux_users: dict[str, Actor]
) -> Iterator[Ds01Env]:
    # Not under pytest's private tmp dir (0700): the test users must read the config.
    root = Path(tempfile.mkdtemp(prefix="ds01-it-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "state"
    # As on a server, laid out by the installer's own function: root-owned, setgid to a
    # group every DS01 user is in (here docker), sticky, with per-user entries.
    install_state(state, group="docker", admin_group=TEST_ADMIN_GROUP)
    limits = root / "resource-limits.yaml"
    inventory = root / "gpus.json"
    config = root / "ds01.yaml"
    catalog = FIXTURES / "aime" / "ml_images.v2.repo"
    if not catalog.exists():
        pytest.skip(f"AIME catalog fixture missing: {catalog}")
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": str(catalog),
                "limits": str(limits),
                "state_dir": str(state),
                "admin_group": TEST_ADMIN_GROUP,
                "gpu": {"inventory": f"file:{inventory}", "runtime": "none"},
            }
        )
    )
    env = Ds01Env(root, config, limits, inventory, engine)
    env.write_limits(DEFAULT_LIMITS)
    env.write_inventory(ONE_H200)
    for path in (config, limits, inventory):
        path.chmod(0o644)
    remove_test_containers(engine)
    workspaces = [Path(pwd.getpwnam(user).pw_dir) / "workspace" for user in TEST_USERS]
    before = {w: set(w.iterdir()) if w.is_dir() else set() for w in workspaces}
    try:
        yield env
    finally:
        remove_test_containers(engine)
        shutil.rmtree(root, ignore_errors=True)
        # Only what this test made: other test modules may be using their own projects.
        for workspace, existing in before.items():
            if workspace.is_dir():
                for entry in set(workspace.iterdir()) - existing:
                    shutil.rmtree(entry, ignore_errors=True)


@pytest.fixture
def alice(linux_users: dict[str, Actor]) -> Actor:
    return linux_users["ds01t-alice"]


@pytest.fixture
def bob(linux_users: dict[str, Actor]) -> Actor:
    return linux_users["ds01t-bob"]


@pytest.fixture
def carol(linux_users: dict[str, Actor]) -> Actor:
    return linux_users["ds01t-carol"]


InspectFn = Callable[[str], dict[str, Any]]


@pytest.fixture
def docker_inspect(engine: DockerEngine) -> InspectFn:
    """Raw ``docker inspect`` JSON, as the plan's test cases read it."""

    def inspect(name: str) -> dict[str, Any]:
        out = subprocess.run(
            ["docker", "inspect", name], capture_output=True, text=True, check=True
        )
        data: list[dict[str, Any]] = json.loads(out.stdout)
        return data[0]

    return inspect
