"""Building on another user's image, and forging DS01's labels (issue 10, finding 5).

On a real engine, through the installed CLI as real users: ds01t-bob builds an image once
for the module; ds01t-alice then tries to read it in every way a build can (a FROM through
an ARG, a COPY --from through a stage name that shadows nothing, an ONBUILD trigger of an
innocent-looking base) and to label her image as bob's (a LABEL in her own Dockerfile, an
edited DS01 block rebuilt with ``image update``). Each is refused (exit 3 or 2) with its
message, and no image of hers is left behind. One build of hers succeeds, on a base that
carries forged ownership labels: ``docker inspect`` shows DS01's values, and bob's commands
do not take her image for his.

Builds are few (bob's, alice's good one; the refused ones build nothing) and use the local
hermetic base with no packages, so they need no network.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.state_setup import install_state
from ds01.domain.actor import Actor
from ds01.domain.labels import L
from ds01.domain.naming import project_image_name
from ds01.domain.user_setup import account_name
from tests.conftest import BASE_IMAGE
from tests.integration.conftest import (
    DEFAULT_LIMITS,
    ONE_H200,
    TEST_ADMIN_GROUP,
    Ds01Env,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUILD_TIMEOUT = 600
BOB_PROJECT = "secimg-bobs"
ALICE_PROJECT = "secimg-alice"
#: Images the module makes as root with the engine directly (not DS01 images).
FORGED_BASE = "ds01t-secimg-forged-base:latest"
ONBUILD_BASE = "ds01t-secimg-onbuild-base:latest"


def _remove(engine: DockerEngine, *refs: str) -> None:
    for ref in refs:
        if engine.image(ref) is not None:
            engine.remove_image(ref, force=True)


def _raw_build(engine: DockerEngine, tag: str, dockerfile: str, labels: dict[str, str]) -> None:
    """An image made as root with the classic builder (no DS01 involved)."""
    for event in engine.api.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, labels=labels, rm=True, decode=True
    ):
        assert "error" not in event, event
    assert engine.image(tag) is not None


@pytest.fixture(scope="module")
def sec_env(engine: DockerEngine, linux_users: dict[str, Actor]) -> Iterator[Ds01Env]:
    """A private DS01 setup; workspaces in its own directory."""
    from tests.conftest import FIXTURES

    catalog = FIXTURES / "aime" / "ml_images.v2.repo"
    if not catalog.exists():
        pytest.skip(f"AIME catalog fixture missing: {catalog}")
    root = Path(tempfile.mkdtemp(prefix="ds01-it-imgsec-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "state"
    state.mkdir()
    install_state(state, group="docker", admin_group=TEST_ADMIN_GROUP)  # as installed
    (root / "ws").mkdir()
    (root / "ws").chmod(0o1777)
    env = Ds01Env(root, root / "ds01.yaml", root / "limits.yaml", root / "gpus.json", engine)
    env.config_path.write_text(
        json.dumps(
            {
                "catalog": str(catalog),
                "limits": str(env.limits_path),
                "state_dir": str(state),
                "workspace_root": f"{root}/ws/{{user}}",
                "admin_group": "ds01t-admins",
                "gpu": {"inventory": f"file:{env.inventory_path}", "runtime": "none"},
            }
        )
    )
    env.write_limits({**DEFAULT_LIMITS, "defaults": {"max_containers": 5, "max_cpus": 1}})
    env.write_inventory(ONE_H200)
    for path in (env.config_path, env.limits_path, env.inventory_path):
        path.chmod(0o644)
    users = [linux_users["ds01t-alice"], linux_users["ds01t-bob"]]
    ours = [project_image_name(p, u.name) for p in (BOB_PROJECT, ALICE_PROJECT) for u in users]
    _remove(engine, *ours, FORGED_BASE, ONBUILD_BASE)
    try:
        yield env
    finally:
        _remove(engine, *ours, FORGED_BASE, ONBUILD_BASE)
        shutil.rmtree(root, ignore_errors=True)


def _ds01(env: Ds01Env, user: Actor, *args: str) -> subprocess.CompletedProcess[str]:
    return env.run_cli(user.name, *args, timeout=BUILD_TIMEOUT)


def _as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def _own_dockerfile(env: Ds01Env, user: Actor, name: str, text: str) -> Path:
    """``text`` as ``<workspace>/<name>/Dockerfile``, owned by ``user``."""
    directory = env.root / "ws" / user.name / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(text)
    for path in (directory.parent, directory, directory / "Dockerfile"):
        os.chown(path, user.uid, user.gid)
    return directory / "Dockerfile"


@pytest.fixture(scope="module")
def bobs_image(sec_env: Ds01Env, linux_users: dict[str, Actor]) -> str:
    """bob's DS01 image, built once: what alice must not read."""
    bob = linux_users["ds01t-bob"]
    dockerfile = _own_dockerfile(
        sec_env, bob, "bob-src", f"FROM {BASE_IMAGE}\nRUN echo bob-secret > /opt/secret\n"
    )
    proc = _ds01(sec_env, bob, "image", "create", BOB_PROJECT, "--dockerfile", str(dockerfile),
                 "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    image: str = _as_json(proc)["image"]
    info = sec_env.engine.image(image)
    assert info is not None and info.labels[L.MAINTAINER] == bob.name
    return image


def _refused(
    env: Ds01Env, alice: Actor, text: str, *, exit_code: int, code: str, fragment: str
) -> None:
    """``image create`` of alice's Dockerfile ``text`` is refused; nothing is left."""
    dockerfile = _own_dockerfile(env, alice, "alice-src", text)
    proc = _ds01(env, alice, "image", "create", ALICE_PROJECT, "--dockerfile", str(dockerfile),
                 "--json")  # fmt: skip
    assert proc.returncode == exit_code, proc.stderr + proc.stdout
    error = _as_json(proc)
    assert error["error"] == code, error
    assert fragment in error["message"], error
    assert "Traceback" not in proc.stderr
    assert env.engine.image(project_image_name(ALICE_PROJECT, alice.name)) is None
    assert not (env.root / "ws" / alice.name / ALICE_PROJECT / "Dockerfile").exists()


def test_from_through_an_arg_is_resolved_and_refused(
    sec_env: Ds01Env, bobs_image: str, alice: Actor
) -> None:
    _refused(
        sec_env,
        alice,
        f"ARG B={bobs_image}\nFROM ${{B}}\n",
        exit_code=3,
        code="base_not_yours",
        fragment=f"{bobs_image} is an image DS01 built for another user (ds01t-bob)",
    )
    # The nested default form and a build argument DS01 does not pass: the same image.
    name, _, tag = bobs_image.partition(":")
    _refused(
        sec_env,
        alice,
        f'ARG T="{tag}"\nfrom ${{NOPE:-{name}}}:${{T}} AS x\n',
        exit_code=3,
        code="base_not_yours",
        fragment="built for another user (ds01t-bob)",
    )


def test_copy_from_through_the_current_stages_name_is_refused(
    sec_env: Ds01Env, bobs_image: str, alice: Actor
) -> None:
    # The stage is not finished when its COPY runs, so the builder takes the name as bob's
    # image; the old check took it for the stage and let it through.
    name = bobs_image.partition(":")[0]
    _refused(
        sec_env,
        alice,
        f"FROM {BASE_IMAGE} AS {name}\nCOPY --from={name} /opt/secret /stolen\n",
        exit_code=3,
        code="base_not_yours",
        fragment=f"{name} is an image DS01 built for another user",
    )
    _refused(
        sec_env,
        alice,
        f"FROM {BASE_IMAGE}\nARG S={bobs_image}\nCOPY --from=$S /opt/secret /stolen\n",
        exit_code=2,
        code="unresolvable_dockerfile",
        fragment="COPY --from=$S depends on a variable",
    )


def test_an_onbuild_trigger_of_the_base_is_checked(
    sec_env: Ds01Env, bobs_image: str, alice: Actor, engine: DockerEngine
) -> None:
    _raw_build(
        engine,
        ONBUILD_BASE,
        f"FROM {BASE_IMAGE}\nONBUILD COPY --from={bobs_image} /opt/secret /stolen\n",
        {},
    )
    _refused(
        sec_env,
        alice,
        f"FROM {ONBUILD_BASE}\n",
        exit_code=3,
        code="base_not_yours",
        fragment=f"(through the ONBUILD triggers of {ONBUILD_BASE})",
    )


def test_a_dockerfile_label_of_ds01s_is_refused(sec_env: Ds01Env, alice: Actor) -> None:
    _refused(
        sec_env,
        alice,
        f"FROM {BASE_IMAGE}\nLABEL aime.mlc.DS01_USER_NAME=ds01t-bob\n",
        exit_code=2,
        code="reserved_label",
        fragment="sets the label aime.mlc.DS01_USER_NAME=ds01t-bob",
    )


def test_ds01_stamps_its_own_ownership_labels_and_its_checks_read_them(
    sec_env: Ds01Env, alice: Actor, bob: Actor, engine: DockerEngine, docker_inspect: Any
) -> None:
    # A base (not a DS01 image: no maintainer) whose labels claim bob's account.
    forged = {
        L.BAKED_USER: account_name(bob.name),
        L.BAKED_UID: str(bob.uid),
        L.BAKED_GID: str(bob.gid),
        L.IMAGE_PROJECT: BOB_PROJECT,
        L.BASE_IMAGE: "not-the-base",
    }
    _raw_build(engine, FORGED_BASE, f"FROM {BASE_IMAGE}\n", forged)
    dockerfile = _own_dockerfile(sec_env, alice, "alice-good", f"FROM {FORGED_BASE}\n")
    proc = _ds01(sec_env, alice, "image", "create", ALICE_PROJECT, "--dockerfile",
                 str(dockerfile), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    image = project_image_name(ALICE_PROJECT, alice.name)
    labels = docker_inspect(image)["Config"]["Labels"]
    assert {k: labels[k] for k in forged} | {L.MAINTAINER: labels[L.MAINTAINER]} == {
        L.BAKED_USER: account_name(alice.name),
        L.BAKED_UID: str(alice.uid),
        L.BAKED_GID: str(alice.gid),
        L.IMAGE_PROJECT: ALICE_PROJECT,
        L.BASE_IMAGE: FORGED_BASE,
        L.MAINTAINER: alice.name,
    }
    built_id = docker_inspect(image)["Id"]

    # The project Dockerfile is hers to edit, DS01's block included: an edited owner line
    # is refused at `image update`, the file and the image stay as they were.
    project_file = sec_env.root / "ws" / alice.name / ALICE_PROJECT / "Dockerfile"
    text = project_file.read_text()
    own_line = f'{L.BAKED_USER}="{account_name(alice.name)}"'
    assert own_line in text
    project_file.write_text(text.replace(own_line, f'{L.BAKED_USER}="{account_name(bob.name)}"'))
    edited = project_file.read_text()
    proc = _ds01(sec_env, alice, "image", "update", ALICE_PROJECT, "--json")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    error = _as_json(proc)
    assert error["error"] == "reserved_label"
    assert f"{L.BAKED_USER}={account_name(bob.name)}" in error["message"]
    assert project_file.read_text() == edited
    assert docker_inspect(image)["Id"] == built_id

    # bob's commands read the labels DS01 set: her image is not his to list or use.
    proc = _ds01(sec_env, bob, "image", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert image not in {row["image"] for row in _as_json(proc)}
    proc = _ds01(sec_env, bob, "container", "create", "secimg-c", "--image", image,
                 "--cpu-only", "--json")  # fmt: skip
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert _as_json(proc)["error"] == "not_owner"
