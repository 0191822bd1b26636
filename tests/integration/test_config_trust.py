"""The DS01_CONFIG attack, replayed as a real unprivileged user (issue 10, finding 1).

On a machine with a system installation, alice wrote her own ds01.yaml (admin_group: a
group she is in, allowed_mount_roots: ['/'], the shared state_dir) and used it to stop
bob's container, act --as bob, read his events, mount /etc and run enforce. Now every
one of those exits 2, naming the file and why, and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ds01.adapters.docker_engine import DockerEngine
from ds01.config.trust import SYSTEM_MARKERS
from ds01.domain.actor import Actor
from ds01.services.container.create import CreateRequest, CreateService
from tests.integration.conftest import Ds01Env

pytestmark = pytest.mark.docker

MARKER = SYSTEM_MARKERS[0]  # /etc/ds01


@pytest.fixture
def system_install() -> Iterator[Path]:
    """A system installation: ``/etc/ds01`` exists (made here only if it was absent).

    Only the empty directory is made, never a ds01.yaml: with no file at the default path
    every DS01 process on this machine still runs on the defaults, so tests running
    alongside are not affected. It is removed afterwards only if it was made here and is
    still empty.
    """
    made = False
    if not os.path.lexists(MARKER):
        MARKER.mkdir(mode=0o755)
        made = True
    try:
        yield MARKER
    finally:
        if made:
            # Something put there meanwhile is left alone (rmdir fails on it).
            with contextlib.suppress(OSError):
                MARKER.rmdir()


@pytest.fixture
def alice_config(ds01_env: Ds01Env, alice: Actor) -> Iterator[Path]:
    """Alice's own configuration, in her home, owned by her: the attack's file."""
    own = Path(alice.home) / f"ds01-trust-{os.getpid()}"
    own.mkdir(exist_ok=True)
    os.chown(own, alice.uid, alice.gid)
    config = own / "ds01.yaml"
    data = yaml.safe_load(ds01_env.config_path.read_text())
    data["admin_group"] = alice.groups[0]  # a group she is in
    data["container"] = {"allowed_mount_roots": ["/"]}
    config.write_text(yaml.safe_dump(data))  # the shared state_dir, limits and inventory
    os.chown(config, alice.uid, alice.gid)
    config.chmod(0o644)
    try:
        yield config
    finally:
        shutil.rmtree(own, ignore_errors=True)


def _as_alice(env: Ds01Env, config: Path, *args: str) -> tuple[int, str]:
    original = env.config_path
    env.config_path = config  # run_cli passes it as DS01_CONFIG
    try:
        result = env.run_cli("ds01t-alice", *args)
    finally:
        env.config_path = original
    return result.returncode, result.stderr


@pytest.mark.usefixtures("system_install")
def test_alices_own_config_gives_her_nothing(
    ds01_env: Ds01Env, alice: Actor, bob: Actor, alice_config: Path, engine: DockerEngine
) -> None:
    victim = CreateService(ds01_env.context(bob)).create(
        bob, CreateRequest(name="victim", framework="pytorch", cpu_only=True)
    )
    assert engine.inspect(victim.container).info.status == "running"
    attempts = [
        ("--as", bob.name, "container", "stop", "victim"),
        ("container", "list", "--all"),
        ("events", "--user", bob.name),
        ("admin", "exempt", alice.name, "--idle", "--until", "7d", "--reason", "x"),
        ("enforce",),
        ("limits", bob.name),
        ("container", "create", "grab", "pytorch", "--cpu-only", "-d", "/etc"),
    ]
    for args in attempts:
        code, err = _as_alice(ds01_env, alice_config, *args)
        assert code == 2, (args, code, err)
        assert f"will not read the DS01 configuration {alice_config}" in err, err
        assert f"owned by {alice.name}" in err and "/etc/ds01 exists" in err, err
        assert "Unset DS01_CONFIG" in err, err
        assert "Traceback" not in err
    # Nothing happened: bob's container runs, alice made none, nobody was exempted.
    assert engine.inspect(victim.container).info.status == "running"
    assert not engine.exists(f"grab._.{alice.uid}")
    exemptions = ds01_env.run_cli(None, "admin", "exemptions", "--json")
    assert exemptions.returncode == 0, exemptions.stderr
    assert alice.name not in exemptions.stdout
    # The same commands with the system's (root-controlled) configuration: she is no
    # admin there, so they are refused by policy, not by the trust rule.
    result = ds01_env.run_cli(alice.name, "--as", bob.name, "container", "stop", "victim")
    assert result.returncode == 3, result.stderr
    assert engine.inspect(victim.container).info.status == "running"


def test_the_root_controlled_test_config_is_trusted_and_can_name_admins(
    ds01_env: Ds01Env, system_install: Path, alice: Actor
) -> None:
    # /tmp/ds01-it-*/ds01.yaml: a root-owned file in a root-owned 0755 directory in the
    # sticky /tmp. When root names alice's group there, she is an admin.
    result = ds01_env.run_cli(alice.name, "container", "list", "--all", "--json")
    assert result.returncode == 3, result.stderr
    ds01_env.write_config(admin_group=alice.groups[0])
    result = ds01_env.run_cli(alice.name, "container", "list", "--all", "--json")
    assert result.returncode == 0, result.stderr


def test_a_limits_file_a_user_owns_is_refused_for_users_but_not_root(
    ds01_env: Ds01Env, system_install: Path, alice: Actor
) -> None:
    # A trusted configuration naming a policy file alice could write.
    own = Path(alice.home) / f"ds01-trust-limits-{os.getpid()}.yaml"
    shutil.copy(ds01_env.limits_path, own)
    os.chown(own, alice.uid, alice.gid)
    own.chmod(0o644)
    try:
        ds01_env.write_config(limits=str(own))
        result = ds01_env.run_cli(alice.name, "limits")
        assert result.returncode == 2, result.stderr
        assert f"will not read the resource-limits file {own}" in result.stderr
        assert "'limits'" in result.stderr
        # Root may use any file.
        result = ds01_env.run_cli(None, "limits", alice.name)
        assert result.returncode == 0, result.stderr
    finally:
        own.unlink(missing_ok=True)


def test_an_inventory_file_a_user_owns_is_refused(
    ds01_env: Ds01Env, system_install: Path, alice: Actor
) -> None:
    own = Path(alice.home) / f"ds01-trust-gpus-{os.getpid()}.json"
    shutil.copy(ds01_env.inventory_path, own)
    os.chown(own, alice.uid, alice.gid)
    try:
        ds01_env.write_config(gpu={"inventory": f"file:{own}"})
        result = ds01_env.run_cli(alice.name, "gpu", "status")
        assert result.returncode == 2, result.stderr
        assert f"will not read the GPU inventory file {own}" in result.stderr
    finally:
        own.unlink(missing_ok=True)


def test_an_alias_bomb_in_the_policy_file_exits_2(ds01_env: Ds01Env, alice: Actor) -> None:
    lines = ["l0: &l0 [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in range(1, 9)]
    ds01_env.limits_path.write_text("\n".join(lines) + "\n")
    for args in (("limits",), ("container", "create", "bombed", "pytorch", "--cpu-only")):
        result = ds01_env.run_cli(alice.name, *args, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "an alias bomb?" in result.stderr and str(ds01_env.limits_path) in result.stderr
        assert "Traceback" not in result.stderr
