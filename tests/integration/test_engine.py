"""Tier 1 on a real Docker engine: create, labels, mounts, user, exec, AIME containers.

Issue 2's "Done when": create from a catalog name and from ``--image``; ``docker
inspect`` shows the AIME label set, the mounts and the user; ``exec`` runs ``id -u`` in
/workspace as the caller; a container made by plain ``docker create`` with AIME's labels
is listed and opened; bad input exits 2 and changes nothing.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
from pathlib import Path

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.domain.actor import Actor
from ds01.domain.labels import AIME_CONTAINER_VERSION, L
from ds01.errors import NotFoundError, RefusedError, UsageError
from ds01.services.container.create import CreateRequest, CreateService
from ds01.services.container.operations import ContainerService
from ds01.services.context import AppContext
from tests.conftest import BASE_IMAGE
from tests.integration.conftest import Ds01Env, InspectFn

pytestmark = pytest.mark.docker

AIME_V2_LABELS = {
    "aime.mlc",
    "aime.mlc.NAME",
    "aime.mlc.USER",
    "aime.mlc.ARCH",
    "aime.mlc.MLC_VERSION",
    "aime.mlc.WORK_MOUNT",
    "aime.mlc.DATA_MOUNT",
    "aime.mlc.MODELS_MOUNT",
    "aime.mlc.FRAMEWORK",
    "aime.mlc.GPUS",
}


def _exec(ctx: AppContext, actor: Actor, name: str, *argv: str) -> tuple[int, str]:
    out: list[bytes] = []

    def collect(stdout: bytes | None, stderr: bytes | None) -> None:
        out.extend(x for x in (stdout, stderr) if x)

    code = ContainerService(ctx).exec(actor, name, list(argv), on_output=collect)
    return code, b"".join(out).decode()


def test_create_from_catalog_name_has_aime_labels_mounts_and_user(
    ds01_env: Ds01Env, alice: Actor, docker_inspect: InspectFn, tmp_path: Path
) -> None:
    ctx = ds01_env.context(alice)
    data = Path(alice.home) / "datasets"
    data.mkdir(exist_ok=True)
    result = CreateService(ctx).create(
        alice, CreateRequest(name="pt", framework="pytorch", data=str(data))
    )

    # The host's H200 (file inventory) maps to CUDA_ADA; the newest PyTorch there is 2.8.0.
    assert result.container == f"pt._.{alice.uid}"
    assert result.image == "aimehub/pytorch-2.8.0-cuda12.6.3"
    inspected = docker_inspect(result.container)
    labels = inspected["Config"]["Labels"]
    assert set(labels) >= AIME_V2_LABELS
    assert labels["aime.mlc"] == alice.name
    assert labels["aime.mlc.USER"] == alice.name
    assert labels["aime.mlc.NAME"] == "pt"
    assert labels["aime.mlc.MLC_VERSION"] == AIME_CONTAINER_VERSION == "4"
    assert labels["aime.mlc.ARCH"] == "CUDA_ADA"
    assert labels["aime.mlc.FRAMEWORK"] == "Pytorch-2.8.0"
    assert labels["aime.mlc.MODELS_MOUNT"] == "-"
    workspace = Path(alice.home) / "workspace" / "pt"
    assert labels["aime.mlc.WORK_MOUNT"] == str(workspace)
    assert labels["aime.mlc.DATA_MOUNT"] == str(data)
    assert workspace.is_dir() and workspace.stat().st_uid == alice.uid

    mounts = {m["Destination"]: m["Source"] for m in inspected["Mounts"]}
    # Plus DS01's keep-alive, read-only from its installation (issue 10, finding 2).
    keepalive = mounts.pop("/sbin/ds01-keepalive")
    assert keepalive.endswith("/ds01/data/keepalive-" + platform.machine())
    assert mounts == {"/workspace": str(workspace), "/data": str(data)}
    assert inspected["Config"]["User"] == f"{alice.uid}:{alice.gid}"
    assert inspected["Config"]["WorkingDir"] == "/workspace"
    assert inspected["HostConfig"]["Privileged"] is False
    # No per-container commit: the container runs the catalog image itself.
    assert inspected["Config"]["Image"] == result.image
    # Started at creation (AIME leaves it created): its GPU is then under the idle rules.
    assert inspected["State"]["Status"] == "running"


def test_exec_runs_in_workspace_as_the_caller_with_a_passwd_entry(
    ds01_env: Ds01Env, alice: Actor
) -> None:
    ctx = ds01_env.context(alice)
    CreateService(ctx).create(alice, CreateRequest(name="who", framework="pytorch"))

    code, out = _exec(ctx, alice, "who", "sh", "-c", "id -u; pwd; whoami; echo $HOME")
    assert code == 0
    uid, cwd, name, home = out.split()
    assert (uid, cwd, name, home) == (
        str(alice.uid),
        "/workspace",
        alice.name,
        f"/home/{alice.name}",
    )
    # Passwordless sudo inside works (a shadow entry exists, so PAM lets it through).
    code, out = _exec(ctx, alice, "who", "sudo", "-n", "id", "-u")
    assert (code, out.strip()) == (0, "0")
    # The exit code of the command comes back unchanged.
    code, _ = _exec(ctx, alice, "who", "sh", "-c", "exit 7")
    assert code == 7


def test_create_from_image_flag(ds01_env: Ds01Env, alice: Actor, docker_inspect: InspectFn) -> None:
    ctx = ds01_env.context(alice)
    result = CreateService(ctx).create(alice, CreateRequest(name="custom", image=BASE_IMAGE))
    labels = docker_inspect(result.container)["Config"]["Labels"]
    assert labels[L.CUSTOM_IMAGE] == BASE_IMAGE
    assert labels[L.FRAMEWORK] == "custom"
    assert set(labels) >= AIME_V2_LABELS
    code, out = _exec(ctx, alice, "custom", "id", "-u")
    assert (code, out.strip()) == (0, str(alice.uid))


def test_aime_created_container_is_listed_opened_and_removed(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    """A container made the way AIME's ``mlc create`` makes it (labels and name only)."""
    tag = f"aimeold._.{alice.uid}"
    labels = {
        "aime.mlc": alice.name,
        "aime.mlc.NAME": "aimeold",
        "aime.mlc.USER": alice.name,
        "aime.mlc.ARCH": "CUDA_ADA",
        "aime.mlc.MLC_VERSION": "4",
        "aime.mlc.WORK_MOUNT": alice.home,
        "aime.mlc.DATA_MOUNT": "-",
        "aime.mlc.MODELS_MOUNT": "-",
        "aime.mlc.FRAMEWORK": "Pytorch-2.5.1",
        "aime.mlc.GPUS": "all",
    }
    argv = [
        "docker",
        "create",
        "-it",
        "--name",
        tag,
        "--user",
        f"{alice.uid}:{alice.gid}",
        "-w",
        "/workspace",
        "-v",
        f"{alice.home}:/workspace",
    ]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["aimehub/pytorch-2.5.1-aime-cuda12.1.1", "bash", "-c", "bash"]
    subprocess.run(argv, check=True, capture_output=True)

    ctx = ds01_env.context(alice)
    views = {v.name: v for v in ContainerService(ctx).list_views(alice)}
    assert views["aimeold"].container == tag
    assert views["aimeold"].managed_by == "aime"
    assert views["aimeold"].framework == "Pytorch-2.5.1"

    # Opened through the real CLI, in a real terminal, as the real user.
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        "/usr/sbin/runuser",
        ["-u", alice.name, "--", str(ds01_env_bin()), "container", "open", "aimeold"],
        env=_cli_env(ds01_env),
        timeout=60,
        encoding="utf-8",
    )
    child.sendline("echo UID=$(id -u) PWD=$(pwd)")
    child.expect(rf"UID={alice.uid} PWD=/workspace")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # The last shell left: like AIME, the container stops.
    assert engine.inspect(tag).info.state.value == "exited"

    ContainerService(ctx).remove(alice, "aimeold")
    assert not engine.exists(tag)


def ds01_env_bin() -> Path:
    from tests.integration.conftest import DS01_BIN

    return DS01_BIN


def _cli_env(env: Ds01Env) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "DS01_CONFIG": str(env.config_path),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
    }


def test_users_cannot_touch_each_others_containers(
    ds01_env: Ds01Env, alice: Actor, bob: Actor
) -> None:
    CreateService(ds01_env.context(alice)).create(
        alice, CreateRequest(name="mine", framework="pytorch")
    )
    bob_ctx = ds01_env.context(bob)
    tag = f"mine._.{alice.uid}"
    not_yours = "^" + re.escape(f"The container '{tag}' belongs to {alice.name}, not you.")
    with pytest.raises(RefusedError, match=not_yours) as refused:
        ContainerService(bob_ctx).remove(bob, tag, force=True)
    assert refused.value.code == "not_owner"
    with pytest.raises(RefusedError, match=not_yours) as refused:
        ContainerService(bob_ctx).exec(bob, tag, ["true"])
    assert refused.value.code == "not_owner"
    # Bob's own name space does not see Alice's container at all.
    with pytest.raises(NotFoundError, match=r"^You have no container named 'mine'") as missing:
        ContainerService(bob_ctx).stop(bob, "mine")
    assert missing.value.code == "unknown_container"
    assert [v.name for v in ContainerService(bob_ctx).list_views(bob)] == []


def _containers_of(engine: DockerEngine, actor: Actor) -> list[str]:
    return [c.tag for c in engine.list_containers([f"{L.USER}={actor.name}"])]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bad#name", "pytorch"], "'#'"),
        (["-lead", "pytorch"], "start with a letter"),
        (["a._.b", "pytorch"], "._."),
        (["x" * 65, "pytorch"], "at most 64"),
        (["ok", "pytorhc"], "Pytorch"),
        (["ok", "pytorch", "9.9.9"], "version"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine, args: list[str], needle: str
) -> None:
    before = _containers_of(engine, alice)
    result = ds01_env.run_cli(alice.name, "container", "create", "--", *args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert _containers_of(engine, alice) == before
    assert not (Path(alice.home) / "workspace" / args[0]).exists()


def test_malformed_catalog_exits_2_and_changes_nothing(
    ds01_env: Ds01Env, alice: Actor, engine: DockerEngine
) -> None:
    bad = ds01_env.root / "bad.repo"
    bad.write_text(
        "Pytorch, 2.5.1, [CUDA_ADA], aimehub/pytorch-2.5.1-aime-cuda12.1.1\n"
        "Pytorch, 2.4.0 [CUDA_ADA] aimehub/pytorch\n"
    )
    bad.chmod(0o644)
    ds01_env.write_config(catalog=str(bad))
    result = ds01_env.run_cli(alice.name, "container", "create", "pt", "pytorch")
    assert result.returncode == 2, result.stderr
    assert "bad.repo" in result.stderr and "line 2" in result.stderr
    assert _containers_of(engine, alice) == []


def test_existing_name_exits_2(ds01_env: Ds01Env, alice: Actor) -> None:
    ctx = ds01_env.context(alice)
    CreateService(ctx).create(alice, CreateRequest(name="twice", framework="pytorch"))
    with pytest.raises(UsageError) as err:
        CreateService(ctx).create(alice, CreateRequest(name="twice", framework="pytorch"))
    assert err.value.code == "container_exists"


def test_list_json_keys_through_the_cli(ds01_env: Ds01Env, alice: Actor) -> None:
    CreateService(ds01_env.context(alice)).create(
        alice, CreateRequest(name="listed", framework="pytorch")
    )
    result = ds01_env.run_cli(alice.name, "container", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["listed"]
    row = rows[0]
    assert {"name", "container", "user", "status", "image", "framework", "gpus", "created"} <= set(
        row
    )
    assert row["container"] == f"listed._.{alice.uid}"
    # The H200 of the file inventory: one device by default when the host has any.
    assert row["user"] == alice.name
    assert row["gpus"] == ["GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"]


def test_root_without_sudo_user_is_refused(ds01_env: Ds01Env) -> None:
    result = ds01_env.run_cli(None, "container", "create", "rootbox", "pytorch")
    assert result.returncode == 3
    assert "root" in result.stderr


def test_events_record_who_what_result(ds01_env: Ds01Env, alice: Actor) -> None:
    ctx = ds01_env.context(alice)
    CreateService(ctx).create(alice, CreateRequest(name="ev", framework="pytorch"))
    ContainerService(ctx).stop(alice, "ev", timeout=1)
    ContainerService(ctx).remove(alice, "ev")
    result = ds01_env.run_cli(alice.name, "events", "--json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    actions = [(e["action"], e["result"], e["actor"]) for e in events]
    assert ("container.create", "ok", alice.name) in actions
    assert ("container.remove", "ok", alice.name) in actions


def test_aime_mlc_list_can_parse_what_ds01_creates(ds01_env: Ds01Env, alice: Actor) -> None:
    """AIME's ``mlc list`` reads ``docker container ls --format '{{json .}}'`` and splits
    the Labels string on ',' then on the first '=': no DS01 label may hold a comma."""
    ds01_env.write_inventory(
        {
            "gpus": [
                {
                    "index": i,
                    "uuid": f"GPU-00000000-0000-0000-0000-00000000000{i}",
                    "name": "NVIDIA A100-SXM4-40GB",
                    "memory_mib": 40960,
                    "compute_capability": "8.0",
                }
                for i in range(2)
            ]
        }
    )
    ds01_env.write_limits(
        {
            "default_group": "ds01t-students",
            "defaults": {"max_gpus_per_container": 2, "max_gpu_equivalents": 2},
            "groups": {"ds01t-students": {"unix_group": "ds01t-students"}},
        }
    )
    CreateService(ds01_env.context(alice)).create(
        alice, CreateRequest(name="multi", framework="pytorch", gpus=2)
    )
    out = subprocess.run(
        [
            "docker",
            "container",
            "ls",
            "-a",
            "--filter",
            f"label=aime.mlc={alice.name}",
            "--format",
            "{{json .}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (row,) = [json.loads(line) for line in out.splitlines() if line]
    labels = dict(pair.split("=", 1) for pair in row["Labels"].split(","))  # AIME's parse
    assert labels["aime.mlc.NAME"] == "multi"
    assert labels["aime.mlc.FRAMEWORK"] == "Pytorch-2.7.1"
    assert labels["aime.mlc.USER"] == alice.name
    assert labels["aime.mlc.GPUS"].count(";") == 1
