"""Tier 3 on a real Docker engine, through a real terminal, as a fresh Linux user.

Issue 6's "Done when": the plan's Test Case 6. A new user runs ``user-setup`` in a
terminal (pexpect, through ``runuser`` and the installed ``ds01``), lets it make an SSH
key, creates the project ``my-thesis`` (PyTorch, computer vision, plus ``wandb``), and
launches it: the image is built from the AIME base, the container gets the user's limits
and a GPU (simulated inventory, ``gpu.runtime: none``), a shell opens and the packages are
there. Then ``container retire`` on the terminal finds a package installed in the
container and adds it to the project's Dockerfile. A second test drives the same commands
without a terminal: nothing asks, defaults apply, and ``retire`` wants ``--yes``.

**Why the AIME base here has torch as metadata only.** AIME's PyTorch images ship torch
and torchvision. The hermetic stand-in for them (a Debian image, see DESIGN.md) does not,
and the cv tier (timm, kornia, opencv-python-headless, scikit-image) needs torch: pip then
downloads the CUDA build of torch from PyPI, 5.8 GB installed, 2 min 26 s for pip alone
on these machines before Docker commits the layer (measured). So this module builds its
own stand-in, ``aimehub/pytorch-2.8.0-ds01u-cuda12.6.3``, from the hermetic base plus
``torch`` and ``torchvision`` *distribution metadata*, as pip sees them on a real AIME
image. pip then installs the cv tier and wandb for real from PyPI (about 150 MB, ~45 s);
the test imports the packages that do not need torch's code (cv2, skimage, wandb) and
checks that pip lists torch, timm, kornia and wandb, which is the plan's own check.

The user is ``ds01u-erin``, not ``ds01t-*``: the shared fixtures remove every ``ds01t-*``
container when any test starts, and other engineers run those tests at the same time.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import actor_for_user
from ds01.adapters.state_setup import install_state
from ds01.domain.actor import Actor
from ds01.domain.labels import L
from ds01.domain.naming import container_tag, project_image_name
from ds01.services.container.deploy import packages_from_changes
from tests.conftest import BASE_IMAGE, FIXTURES
from tests.integration.conftest import DS01_BIN, ONE_H200, TEST_ADMIN_GROUP, Ds01Env

USER, GROUP = "ds01u-erin", "ds01u-ux"
PROJECT = "my-thesis"
PLAIN = "plain-proj"
#: The AIME PyTorch stand-in of this module (see the module docstring).
STAND_IN = "aimehub/pytorch-2.8.0-ds01u-cuda12.6.3"
H200_UUID = ONE_H200["gpus"][0]["uuid"]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Small pure-Python packages installed inside containers (retire must notice them).
LATE_PACKAGE, LATE_MODULE = "tomli-w", "tomli_w"
BUILD_TIMEOUT = 900
GIB = 1 << 30

_STAND_IN_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
# AIME's PyTorch images ship torch and torchvision; pip must see them as installed.
RUN set -eu; \\
    site=$(python3 -c 'import site; print(site.getsitepackages()[0])'); \\
    for dist in torch:2.8.0 torchvision:0.23.0; do \\
        name=${{dist%%:*}}; version=${{dist#*:}}; meta="$site/$name-$version.dist-info"; \\
        mkdir -p "$meta"; \\
        printf 'Metadata-Version: 2.1\\nName: %s\\nVersion: %s\\n' "$name" "$version" \\
            > "$meta/METADATA"; \\
        echo pip > "$meta/INSTALLER"; : > "$meta/RECORD"; \\
    done
LABEL ds01.test.stand-in=aime-pytorch
"""


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


# -- fixtures ---------------------------------------------------------------------------


def _remove_user_artefacts(engine: DockerEngine) -> None:
    """Containers and images of this module's user, whatever state a run left."""
    for info in engine.list_containers([f"{L.USER}={USER}"]):
        engine.remove(info.id, force=True)
    for image in engine.list_images([f"{L.MAINTAINER}={USER}"]):
        engine.remove_image(image.id, force=True)


@pytest.fixture(scope="module")
def erin(engine: DockerEngine) -> Iterator[Actor]:
    """A fresh Linux account: made anew for this module, removed (with its home) after."""
    if os.geteuid() != 0:
        pytest.skip("creating a test user needs root (CI runs as root)")
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        _run(["groupadd", GROUP])
    _remove_user_artefacts(engine)
    try:
        pwd.getpwnam(USER)
        _run(["userdel", "--remove", USER])  # left by an interrupted run: start fresh
    except KeyError:
        pass
    _run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", f"{GROUP},docker", USER])
    try:
        yield actor_for_user(USER)
    finally:
        _remove_user_artefacts(engine)
        subprocess.run(["userdel", "--remove", USER], check=False, capture_output=True)


@pytest.fixture(scope="module")
def stand_in(engine: DockerEngine) -> Iterator[str]:
    """The AIME PyTorch stand-in (hermetic base + torch metadata), removed afterwards."""
    made = engine.image(STAND_IN) is None
    if made:
        _run(["docker", "build", "--quiet", "-t", STAND_IN, "-"], input=_STAND_IN_DOCKERFILE)
    try:
        yield STAND_IN
    finally:
        if made:
            subprocess.run(["docker", "rmi", STAND_IN], check=False, capture_output=True)


@pytest.fixture(scope="module")
def ux_env(engine: DockerEngine, erin: Actor, stand_in: str) -> Iterator[Ds01Env]:
    """A private DS01 setup: this module's catalog, limits, one simulated H200."""
    if not HOST_CA_BUNDLE.is_file():
        pytest.skip(f"{HOST_CA_BUNDLE} missing: builds could not reach PyPI")
    if not (FIXTURES / "aime").is_dir():
        pytest.skip(f"shared fixtures missing: {FIXTURES}")
    root = Path(tempfile.mkdtemp(prefix="ds01-it-ux-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "state"
    state.mkdir()
    install_state(state, group="docker", admin_group=TEST_ADMIN_GROUP)  # as installed
    catalog = root / "ml_images.repo"
    # AIME's v2 line format; the TensorFlow line gives the framework picker a choice.
    catalog.write_text(
        f"Pytorch, 2.8.0, [CUDA_ADA], {stand_in}\n"
        "Tensorflow, 2.16.1, [CUDA_ADA], aimehub/tensorflow-2.16.1-cuda12.3\n"
    )
    env = Ds01Env(root, root / "ds01.yaml", root / "limits.yaml", root / "gpus.json", engine)
    env.config_path.write_text(
        json.dumps(
            {
                "catalog": str(catalog),
                "limits": str(env.limits_path),
                "state_dir": str(state),
                "admin_group": "ds01t-admins",
                "gpu": {"inventory": f"file:{env.inventory_path}", "runtime": "none"},
                "build": {"ca_certificates": [str(HOST_CA_BUNDLE)]},
            }
        )
    )
    env.write_limits(
        {
            "default_group": GROUP,
            "defaults": {"max_containers": 3, "max_cpus": 1, "memory": "4g"},
            "groups": {GROUP: {"unix_group": GROUP}},
        }
    )
    env.write_inventory(ONE_H200)
    for path in (catalog, env.config_path, env.limits_path, env.inventory_path):
        path.chmod(0o644)
    try:
        yield env
    finally:
        _remove_user_artefacts(engine)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def no_containers(ux_env: Ds01Env, engine: DockerEngine) -> None:
    """Each test starts without containers of the user (one H200: a container a failed
    test left would hold it)."""
    for info in engine.list_containers([f"{L.USER}={USER}"]):
        engine.remove(info.id, force=True)


def _terminal_env(env: Ds01Env) -> dict[str, str]:
    # A terminal (a pty: prompts, pickers, the shell), a dumb one: rich then writes plain
    # text, so the transcript can be matched word for word.
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "DS01_CONFIG": str(env.config_path),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


def _spawn(env: Ds01Env, *args: str, log: Path) -> Any:
    """``ds01 ARGS`` as the test user on a real terminal (a pty)."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        "/usr/sbin/runuser",
        ["-u", USER, "--", str(DS01_BIN), *args],
        env=_terminal_env(env),
        timeout=60,
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(50, 200),
    )
    child.logfile_read = _Transcript(log)
    return child


class _Transcript:
    """Where pexpect copies what the terminal shows (printed when a test fails)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(text)

    def flush(self) -> None:
        return None


def _answer(child: Any, pattern: str, reply: str, *, timeout: int = 60) -> None:
    child.expect(pattern, timeout=timeout)
    child.sendline(reply)


def _session_tail(log: Path) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)[-6000:]


# -- Test Case 6 ------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_case_6_user_setup_to_a_gpu_shell_with_the_packages(
    ux_env: Ds01Env, erin: Actor, engine: DockerEngine, no_containers: None
) -> None:
    log = ux_env.root / "session.log"
    try:
        _user_setup_session(ux_env, erin, log)
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- terminal ---\n{_session_tail(log)}") from exc

    tag = container_tag(PROJECT, erin.uid)
    image = project_image_name(PROJECT, erin.name)
    workspace = Path(erin.home) / "workspace" / PROJECT

    # 1. The image was built from the AIME base: its history holds the base image.
    info = engine.image(image)
    assert info is not None
    assert info.labels[L.BASE_IMAGE] == STAND_IN
    assert info.labels[L.IMAGE_TIERS].split(";") == ["framework", "system", "cv", "custom"]
    base = engine.image(STAND_IN)
    assert base is not None
    history = {e["Id"] for e in engine.image_history(image)}
    assert base.id in history

    # 2. The container has the user's limits, set at creation.
    details = engine.inspect(tag)
    host = details.host_config
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == 4 * GIB
    assert host["ShmSize"] == 8 * GIB
    assert host["Privileged"] is False
    assert details.info.labels[L.GROUP] == GROUP
    assert details.info.labels[L.CUSTOM_IMAGE] == image
    assert {m["Destination"]: m["Source"] for m in details.mounts}["/workspace"] == str(workspace)

    # 3. A GPU is allocated to it, and still held after the shell stopped it.
    assert details.info.labels[L.GPU_UUIDS] == H200_UUID
    assert details.env["CUDA_VISIBLE_DEVICES"] == H200_UUID
    status = json.loads(ux_env.run_cli(USER, "gpu", "status", "--json").stdout)
    (device,) = status["devices"]
    assert (device["user"], device["container"]) == (USER, tag)

    # The project: layout, files, git, all the user's own.
    for relative in ("data/raw", "data/processed", "notebooks", "src", "models", "outputs"):
        assert (workspace / relative).is_dir(), relative
    requirements = (workspace / "requirements.txt").read_text()
    assert "timm" in requirements and "wandb" in requirements
    assert "jupyterlab" not in requirements
    assert "/data/raw/*" in (workspace / ".gitignore").read_text()
    assert PROJECT in (workspace / "README.md").read_text()
    assert all(p.stat().st_uid == erin.uid for p in [workspace, *workspace.rglob("*")])
    commits = subprocess.run(
        ["runuser", "-u", USER, "--", "git", "-C", str(workspace), "log", "--format=%an %s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(commits) == 1 and commits[0].startswith(USER)
    tracked = subprocess.run(
        ["runuser", "-u", USER, "--", "git", "-C", str(workspace), "ls-files"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"Dockerfile", "README.md", "requirements.txt", "data/raw/.gitkeep"} <= set(tracked)
    key = Path(erin.home) / ".ssh" / "id_ed25519.pub"
    assert key.is_file() and key.stat().st_uid == erin.uid

    # user-setup again (experts, no terminal): the rest passes now; the one GPU is erin's.
    proc = ux_env.run_cli(USER, "user-setup", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    checks = {c["key"]: c for c in json.loads(proc.stdout)["checks"]}
    assert {k: c["status"] for k, c in checks.items()} == {
        "docker": "ok",
        "limits": "ok",
        "gpus": "warn",
        "workspace": "ok",
        "ssh": "ok",
    }
    assert "You hold 1 of them" in checks["gpus"]["details"][1]
    assert "1 project(s) (my-thesis)" in checks["workspace"]["summary"]

    # Retire on the terminal: the package installed in the shell goes into the Dockerfile.
    try:
        _retire_session(ux_env, log)
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- terminal ---\n{_session_tail(log)}") from exc
    assert not engine.exists(tag)
    dockerfile = (workspace / "Dockerfile").read_text()
    custom = dockerfile.split("ds01 custom tier >>>", 1)[1].split("ds01 custom tier <<<", 1)[0]
    assert re.search(rf"{LATE_PACKAGE}==[0-9]", custom), custom
    status = json.loads(ux_env.run_cli(USER, "gpu", "status", "--json").stdout)
    assert status["devices"][0]["user"] is None  # released
    events = json.loads(ux_env.run_cli(USER, "events", "--json").stdout)
    done = {(e["action"], e["result"]) for e in events}
    for action in ("project.init", "image.create", "container.deploy", "container.retire"):
        assert (action, "ok") in done, action


def _user_setup_session(env: Ds01Env, erin: Actor, log: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = _spawn(env, "user-setup", "--guided", log=log)
    child.expect(r"\(1/3\)")
    child.expect("Docker engine: reachable")
    child.expect(f"Your limits: group {GROUP}: 1 CPU and 4g memory")
    child.expect(r"GPUs: 1 of 1 GPU\(s\) free now \(NVIDIA H200\)")
    child.expect("Workspace: .* does not exist yet")
    child.expect("SSH key: no SSH key")
    child.expect(r"\(2/3\)")
    _answer(child, r"Create an SSH key on this server now.*\]:?", "y")
    _answer(child, "Enter passphrase", "")
    _answer(child, "Enter same passphrase", "")
    child.expect("Your public key")
    child.expect("Dev Containers: Attach to Running Container")
    child.expect(r"\(3/3\)")
    _answer(child, r"Create your first project now\?.*\]:?", "y")
    _answer(child, r"Project name.*:", PROJECT)
    child.expect("Framework")
    _answer(child, "Number or name", "pytorch")
    child.expect("Use case")
    child.expect("cv +computer vision")
    _answer(child, "Number or name", "cv")
    _answer(child, r"Include Jupyter and the data-science set.*\]:?", "n")
    _answer(child, r"Extra pip packages.*:", "wandb")
    child.expect("git: committed")
    _answer(child, r"Build the image and open a container now\?.*\]:?", "y")
    child.expect("Building " + re.escape(project_image_name(PROJECT, USER)), timeout=120)
    child.expect(r"Built \S+ in \d+ s", timeout=BUILD_TIMEOUT)
    child.expect(f"Created {re.escape(container_tag(PROJECT, erin.uid))}", timeout=120)
    child.expect(f"GPU: {H200_UUID}")
    child.expect(r"\(3/3\) Shell")
    # In the container's shell. Each check prints a marker the typed line does not hold.
    child.sendline(
        "python3 -c \"import cv2, skimage, wandb; print('IMPORTS' + '_OK', cv2.__version__)\""
    )
    child.expect(r"IMPORTS_OK \d", timeout=120)
    child.sendline(
        "python3 -c \"import importlib.metadata as m; print('PKGS' + ':' + ','.join("
        "d for d in ('torch', 'timm', 'kornia', 'wandb') if m.version(d)))\""
    )
    child.expect("PKGS:torch,timm,kornia,wandb")
    child.sendline("echo GPU_IN_CONTAINER=$CUDA_VISIBLE_DEVICES; id -un; pwd")
    child.expect(f"GPU_IN_CONTAINER={H200_UUID}")
    child.expect("/workspace")
    child.sendline("exit")
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert child.exitstatus == 0, child.exitstatus

    # The plan's step 4, `container-run my-thesis`: the stopped container starts again.
    child = _spawn(env, "container-run", PROJECT, log=log)
    child.sendline("echo RUN_''OK $(id -un)")
    child.expect(f"RUN_OK {USER}")
    child.sendline(f"python3 -m pip install --user --quiet {LATE_PACKAGE} && echo LATE_''OK")
    child.expect("LATE_OK", timeout=180)
    child.sendline("exit")
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert child.exitstatus == 0, child.exitstatus


def _retire_session(env: Ds01Env, log: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = _spawn(env, "container-retire", "--guided", log=log)
    child.expect("NAME")
    child.expect(PROJECT)
    _answer(child, "Number or name", PROJECT)
    _answer(child, rf"Retire {PROJECT}: stop and remove.*\]:?", "y")
    child.expect(r"\(1/3\) Packages installed in the container")
    child.expect(f"Installed since the image: {LATE_PACKAGE}==")
    _answer(child, r"Add this package to .*Dockerfile.*\]:?", "y")
    child.expect("Added to the custom tier")
    child.expect(r"\(3/3\) Remove and release the GPU")
    child.expect(f"released {H200_UUID}")
    child.expect(f"Retired {PROJECT}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.exitstatus


# -- without a terminal -----------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_without_a_terminal_nothing_asks_and_defaults_apply(
    ux_env: Ds01Env, erin: Actor, engine: DockerEngine, no_containers: None
) -> None:
    def ds01(*args: str) -> subprocess.CompletedProcess[str]:
        return ux_env.run_cli(USER, *args, timeout=BUILD_TIMEOUT)

    workspace = Path(erin.home) / "workspace" / PLAIN
    tag = container_tag(PLAIN, erin.uid)
    proc = ds01("project-init", PLAIN, "--no-jupyter", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    made = json.loads(proc.stdout)
    assert made["git"] == "committed"
    assert made["tiers"] == ["framework", "system"]
    assert {"Dockerfile", "README.md", ".gitignore", "requirements.txt"} <= set(made["created"])
    # Again: nothing is replaced, everything is kept.
    again = json.loads(ds01("project-init", PLAIN, "--json").stdout)
    assert again["created"] == [] and "Dockerfile" in again["kept"]
    assert again["git"] == "existing repository"

    # deploy without a terminal starts in the background (building the image first).
    proc = ds01("container-deploy", PLAIN)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "background" in proc.stderr + proc.stdout
    assert engine.inspect(tag).info.state.value == "running"
    # A second deploy uses the container that is there.
    proc = ds01("container", "deploy", PLAIN, "--background")
    assert proc.returncode == 0, proc.stderr
    assert "already" in proc.stdout

    proc = ds01("container", "exec", PLAIN, "--", "python3", "-m", "pip", "install", "--user",
                "--quiet", LATE_PACKAGE)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = ds01("container", "retire", PLAIN)
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert engine.exists(tag)

    dockerfile = (workspace / "Dockerfile").read_text()
    proc = ds01("container", "retire", PLAIN, "--yes")
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert f"Installed since the image: {LATE_PACKAGE}==" in out
    assert f"ds01 image update {PLAIN} --add-pip" in out  # how to keep them
    assert (workspace / "Dockerfile").read_text() == dockerfile  # not saved unasked
    assert not engine.exists(tag)

    # With --save-packages (and --json) the package goes into the custom tier.
    assert ds01("container", "deploy", PLAIN, "--background").returncode == 0
    assert ds01("container", "exec", PLAIN, "--", "python3", "-m", "pip", "install",
                "--user", "--quiet", LATE_PACKAGE).returncode == 0  # fmt: skip
    proc = ds01("container-retire", PLAIN, "--yes", "--save-packages", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["saved_packages"] == result["installed_packages"]
    assert result["saved_packages"][0].startswith(f"{LATE_PACKAGE}==")
    assert result["released_gpus"] == [H200_UUID]
    assert result["saved_packages"][0] in (workspace / "Dockerfile").read_text()
    assert not engine.exists(tag)


# -- the package diff, on plain data ----------------------------------------------------


def test_packages_from_docker_diff() -> None:
    site = "/home/erin/.local/lib/python3.11/site-packages"
    dist = "/usr/local/lib/python3.11/dist-packages"
    changes = [
        {"Kind": 0, "Path": "/home/erin"},
        {"Kind": 1, "Path": f"{site}/tomli_w-1.2.0.dist-info"},
        {"Kind": 1, "Path": f"{site}/tomli_w-1.2.0.dist-info/METADATA"},
        {"Kind": 1, "Path": f"{site}/tomli_w"},
        {"Kind": 1, "Path": f"{dist}/Scikit_Image-0.25.2.dist-info"},
        {"Kind": 1, "Path": f"{dist}/oldstyle-1.0-py3.11.egg-info"},
        {"Kind": 1, "Path": f"{dist}/pip-25.1.dist-info"},  # pip updating itself
        {"Kind": 2, "Path": f"{dist}/pip-23.0.dist-info"},
        {"Kind": 1, "Path": f"{site}/my_code-0.1.dist-info"},
        {"Kind": 1, "Path": f"{site}/my_code-0.1.dist-info/direct_url.json"},
        {"Kind": 1, "Path": "/workspace-not-mounted/notes-1.0.dist-info"},
    ]
    found = packages_from_changes(changes)
    assert found.added == ("oldstyle==1.0", "scikit-image==0.25.2", "tomli-w==1.2.0")
    assert found.direct == ("my-code",)
    assert packages_from_changes([]).empty
