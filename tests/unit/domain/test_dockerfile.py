"""Dockerfile rendering, wrapping and custom-tier editing (no Docker needed)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ds01.domain.dockerfile import (
    CA_BUNDLE,
    CUSTOM_BEGIN,
    CUSTOM_END,
    BuildNetwork,
    ImageSpec,
    ImageUser,
    account_name,
    render_dockerfile,
)
from ds01.domain.dockerfile_edit import (
    USER_BLOCK_BEGIN,
    dockerfile_base_image,
    images_referenced,
    read_custom_tier,
    replace_custom_tier,
    wrap_user_dockerfile,
)
from ds01.domain.labels import ImageLabels, L
from ds01.domain.packages import (
    DATA_SCIENCE_PACKAGES,
    JUPYTER_PACKAGES,
    CustomTier,
    PackagePlan,
    UseCase,
    parse_apt_specs,
    parse_pip_specs,
    plan_packages,
)
from ds01.errors import UsageError

BASE = "aimehub/pytorch-2.5.1-aime-cuda12.1.1"


def _spec(
    plan: PackagePlan | None = None,
    *,
    user: ImageUser | None = None,
    network: BuildNetwork | None = None,
    project: str = "my-cv",
) -> ImageSpec:
    return ImageSpec(
        base_image=BASE,
        project=project,
        framework="Pytorch-2.5.1",
        plan=plan or plan_packages(use_case=UseCase.CV, pip=["rich"], apt=["ffmpeg"]),
        user=user or ImageUser(uid=1000, gid=1000, login="alice"),
        network=network or BuildNetwork(),
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined as Docker does."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), rest))
        pending = ""
    assert not pending, "dangling continuation"
    return out


def labels_of(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for keyword, rest in instructions(text):
        if keyword == "LABEL":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                assert key not in labels, f"label {key} set twice"
                labels[key] = value
    return labels


def index_of(lines: list[str], prefix: str, start: int = 0) -> int:
    return next(i for i in range(start, len(lines)) if lines[i].startswith(prefix))


# ----------------------------------------------------------------------------- render


def test_sections_come_in_the_cache_friendly_order() -> None:
    network = BuildNetwork(ca_certificates=("ds01-ca/campus.crt",))
    lines = render_dockerfile(_spec(network=network)).splitlines()
    order = [
        f"FROM {BASE}",
        f"LABEL {L.BASE_IMAGE}=",
        "ARG PIP_INDEX_URL",
        "COPY ds01-ca/campus.crt",
        "ENV PIP_CERT=",
        "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
        "# System tools",
        "# Tier 2 - base",
        "# Tier 3 - use case 'cv'",
        "ARG DS01_USER_UID=1000",
        "ENV PATH=/home/alice/.local/bin:",
        CUSTOM_BEGIN,
        CUSTOM_END,
        "ENV HF_HOME=/workspace/.cache/huggingface",
        f"LABEL {L.CUSTOM_IMAGE}=",
        "WORKDIR /workspace",
        "USER 1000:1000",
        'CMD ["bash"]',
    ]
    positions = [index_of(lines, prefix) for prefix in order]
    assert positions == sorted(positions)
    assert lines[positions[6] + 1].startswith("RUN ")  # the system tools are one RUN
    assert lines[0].startswith("#") and lines[-1] == 'CMD ["bash"]'


def test_each_tier_is_its_own_run_and_duplicates_are_gone() -> None:
    plan = plan_packages(use_case=UseCase.NLP, pip=["pandas", "rich", "transformers"])
    text = render_dockerfile(_spec(plan))
    pip_runs = [rest for kw, rest in instructions(text) if rest.startswith("python3 -m pip")]
    assert len(pip_runs) == 3  # base, use case, custom
    assert [r.split()[5:] for r in pip_runs] == [
        [*JUPYTER_PACKAGES, *DATA_SCIENCE_PACKAGES],
        ["transformers", "datasets", "accelerate", "sentencepiece", "peft", "evaluate"],
        ["rich"],
    ]
    assert text.count("        pandas") == 1


def test_requirements_tier_replaces_base_and_use_case() -> None:
    plan = plan_packages(requirements="polars>=1\n", jupyter=True)
    text = render_dockerfile(_spec(plan))
    assert "# Tiers 2-3, replaced by your requirements file" in text
    assert "# Tier 2 - base" not in text and "jupyterlab" not in text
    assert "'polars>=1'" in text


def test_labels_are_imagelabels_and_round_trip() -> None:
    spec = _spec()
    labels = labels_of(render_dockerfile(spec))
    assert labels == spec.labels().encode()
    decoded = ImageLabels.decode(labels)
    assert decoded is not None
    assert decoded.tiers == ("framework", "system", "jupyter", "datascience", "cv", "custom")
    assert decoded.uid == 1000 and decoded.user == "alice"
    assert decoded.custom_image == "my-cv-alice-image:latest"


def test_labels_shared_by_all_users_come_before_any_package_layer() -> None:
    text = render_dockerfile(_spec())
    first_run = text.index("\nRUN ")
    assert text.index(L.BASE_IMAGE) < first_run and text.index(L.IMAGE_FRAMEWORK) < first_run
    for per_user in (L.MAINTAINER, L.CUSTOM_IMAGE, L.BAKED_UID, L.IMAGE_TIERS):
        assert text.index(per_user) > text.index("ARG DS01_USER_UID")


def test_package_layers_do_not_depend_on_the_user() -> None:
    """Everything up to the user setup is shared by every user on the same base and tiers."""
    alice = render_dockerfile(_spec(user=ImageUser(1000, 1000, "alice")))
    bob = render_dockerfile(_spec(user=ImageUser(1700000000, 100, "bob@ldap.example")))

    def shared(text: str) -> str:
        body = text[text.index("FROM ") :]
        return body[: body.index("# Your user, baked in")]

    assert shared(alice) == shared(bob)


def test_networking_is_build_args_and_never_baked_in() -> None:
    network = BuildNetwork(
        pip_index_url="http://mirror.campus.example/simple",
        http_proxy="http://proxy.campus.example:3128",
        https_proxy="http://proxy.campus.example:3128",
        no_proxy="localhost,.campus.example",
    )
    text = render_dockerfile(_spec(network=network))
    assert "campus.example" not in text
    assert ("ARG", "PIP_INDEX_URL") in instructions(text)
    assert ("ARG", "DEBIAN_FRONTEND=noninteractive") in instructions(text)
    assert not re.search(r"(?i)^(ARG|ENV) +\w*_proxy", text, re.MULTILINE)
    assert network.build_args() == {
        "PIP_INDEX_URL": "http://mirror.campus.example/simple",
        "PIP_TRUSTED_HOST": "mirror.campus.example",
        "http_proxy": "http://proxy.campus.example:3128",
        "HTTP_PROXY": "http://proxy.campus.example:3128",
        "https_proxy": "http://proxy.campus.example:3128",
        "HTTPS_PROXY": "http://proxy.campus.example:3128",
        "no_proxy": "localhost,.campus.example",
        "NO_PROXY": "localhost,.campus.example",
    }
    # The same file, whatever the network: configuration changes never dirty the cache.
    assert text == render_dockerfile(_spec())
    assert BuildNetwork(pip_index_url="https://m.example/simple").build_args() == {
        "PIP_INDEX_URL": "https://m.example/simple"
    }


def test_ca_certificates_are_copied_and_trusted() -> None:
    network = BuildNetwork(ca_certificates=("ds01-ca/campus.crt", "ds01-ca/host-bundle.crt"))
    text = render_dockerfile(_spec(network=network))
    assert (
        "COPY ds01-ca/campus.crt ds01-ca/host-bundle.crt /usr/local/share/ca-certificates/ds01/"
        in text
    )
    env = dict(
        pair.split("=", 1)
        for kw, rest in instructions(text)
        if kw == "ENV"
        for pair in rest.split()
    )
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        assert env[variable] == CA_BUNDLE
    assert "update-ca-certificates" in text
    assert "COPY" not in render_dockerfile(_spec())


@pytest.mark.parametrize(
    "names",
    [("/etc/ssl/cert.crt",), ("../up.crt",), ("a.pem",), ("a b.crt",), ("x/a.crt", "y/a.crt")],
)
def test_bad_ca_certificate_names_are_refused(names: tuple[str, ...]) -> None:
    with pytest.raises(
        UsageError, match=r"CA certificate file names \[.*\] can't be used|share a file name"
    ):
        BuildNetwork(ca_certificates=names)


@pytest.mark.parametrize(
    "url", ["ftp://mirror/simple", "http://mirror/simple\nRUN evil", "http://m/ x"]
)
def test_bad_index_urls_are_refused(url: str) -> None:
    with pytest.raises(
        UsageError, match=r"^build.pip_index_url (must be http\(s\)|'.*' is not a URL)"
    ):
        BuildNetwork(pip_index_url=url)


def test_rendering_writes_the_tiers_exactly() -> None:
    """The use-case and custom tiers, written out: one package per line, quoted for the
    shell only where needed, the tier label last inside the markers."""
    plan = plan_packages(use_case=UseCase.LLM, pip=["rich", "numpy<3"], apt=["ffmpeg"])
    text = render_dockerfile(_spec(plan))
    assert (
        "# Tier 3 - use case 'llm' (--type).\n"
        "RUN python3 -m pip install --no-cache-dir \\\n"
        "        transformers \\\n"
        "        accelerate \\\n"
        "        peft \\\n"
        "        trl \\\n"
        "        bitsandbytes \\\n"
        "        einops \\\n"
        "        sentencepiece\n"
    ) in text
    begin = text.index(CUSTOM_BEGIN)
    assert text[begin : text.index(CUSTOM_END) + len(CUSTOM_END)] == (
        "# >>> ds01 custom tier >>>\n"
        "# Tier 4 - custom: your own packages (--pip/--apt, `ds01 image update --add-pip/\n"
        "# --add-apt/--remove`). ds01 rewrites everything between the two marker lines; you\n"
        "# may edit here too: keep one package per line and the RUN lines' shape.\n"
        "RUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends \\\n"
        "        ffmpeg \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        "RUN python3 -m pip install --no-cache-dir \\\n"
        "        rich \\\n"
        "        'numpy<3'\n"
        'LABEL aime.mlc.DS01_TIERS="framework;system;jupyter;datascience;llm;custom"\n'
        "# <<< ds01 custom tier <<<"
    )


def test_no_buildkit_only_syntax() -> None:
    network = BuildNetwork(ca_certificates=("ca/a.crt",))
    text = render_dockerfile(_spec(network=network))
    for keyword, rest in instructions(text):
        assert "<<" not in rest, f"heredoc in {keyword}"
        assert "--mount" not in rest
    assert not text.startswith("# syntax=")


def _shell_of_runs(text: str) -> list[str]:
    return [rest for keyword, rest in instructions(text) if keyword == "RUN"]


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_every_run_is_valid_posix_shell(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    plan = plan_packages(use_case=UseCase.CV, pip=["numpy>=1.26,<3", "rich[jupyter]"], apt=["sox"])
    network = BuildNetwork(ca_certificates=("ca/a.crt",))
    spec = _spec(plan, network=network, user=ImageUser(1700000000, 1700000000, "a.b@x.org"))
    runs = _shell_of_runs(render_dockerfile(spec))
    assert len(runs) == 7  # ca, system, base, use case, user, custom apt, custom pip
    for script in runs:
        result = subprocess.run(
            [shell, "-n", "-c", script], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (script, result.stderr)


def test_custom_packages_install_as_root_into_the_system_python() -> None:
    text = render_dockerfile(_spec(plan_packages(pip=["rich"])))
    custom = text[text.index(CUSTOM_BEGIN) : text.index(CUSTOM_END)]
    assert "RUN python3 -m pip install --no-cache-dir" in custom
    assert "--user" not in custom
    # No USER switch before the packages: they land in the site-packages every user reads.
    assert text.index("\nUSER ") > text.index(CUSTOM_END)


# ------------------------------------------------------------------------------ users


@pytest.mark.parametrize(
    ("login", "account"),
    [
        ("alice", "alice"),
        ("a.b@domain", "a_b"),
        ("228755@students.example", "u_228755"),
        ("Jane.Doe@Uni.EDU", "jane_doe"),
        ("root", "u_root"),
        ("_svc", "svc"),
        ("x" * 40, "x" * 24 + "_bd913ff"),  # sha256("x" * 40) begins bd913ff
    ],
)
def test_account_names(login: str, account: str) -> None:
    assert account_name(login) == account


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,80}", fullmatch=True))
def test_account_name_is_always_valid_for_useradd(login: str) -> None:
    assert re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", account_name(login))
    ImageUser(uid=1000, gid=1000, login=login)


def test_ldap_and_numeric_users_and_a_high_uid() -> None:
    user = ImageUser(uid=1_700_000_000, gid=1_700_000_000, login="228755@students.example")
    text = render_dockerfile(_spec(user=user))
    args = dict(
        rest.split("=", 1) for kw, rest in instructions(text) if kw == "ARG" and "=" in rest
    )
    assert args["DS01_USER_UID"] == "1700000000"
    assert args["DS01_USER_NAME"] == "u_228755"
    assert args["DS01_USER_LOGIN"] == "228755@students.example"
    assert "useradd --no-log-init" in text
    assert ': > "$log"' in text and "/var/log/lastlog /var/log/faillog" in text
    assert "ENV PATH=/home/u_228755/.local/bin:" in text
    assert "NOPASSWD: ALL" in text
    assert "USER 1700000000:1700000000" in text
    assert labels_of(text)[L.MAINTAINER] == "228755@students.example"


@pytest.mark.parametrize(
    ("uid", "gid", "login"),
    [
        (0, 0, "root"),
        (-1, 1000, "alice"),
        (2**32 - 1, 1000, "alice"),
        (1000, 2**32, "alice"),
        (1000, 1000, "alice\nRUN curl evil | sh"),
        (1000, 1000, "al ice"),
        (1000, 1000, "a$b"),
        (1000, 1000, "DOMAIN\\alice"),
        (1000, 1000, 'a"b'),
        (1000, 1000, "-alice"),
        (1000, 1000, ""),
        (True, 1000, "alice"),
    ],
)
def test_unsafe_users_are_refused(uid: int, gid: int, login: str) -> None:
    with pytest.raises(
        UsageError,
        match=r"is not a valid id|not build images for root|can't be written into an image safely",
    ):
        ImageUser(uid=uid, gid=gid, login=login)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", "x\nRUN curl evil | sh"),
        ("project", "my project"),
        ("project", "a;b"),
        ("base_image", "debian:bookworm\nRUN evil"),
        ("base_image", "debian bookworm"),
        ("base_image", "Debian"),
        ("base_image", "$BASE"),
        ("framework", "Pytorch 2.5"),
        ("framework", 'x"y'),
    ],
)
def test_hostile_spec_fields_are_refused(field: str, value: str) -> None:
    kwargs: dict[str, Any] = {"base_image": BASE, "project": "p", "framework": "custom"}
    kwargs[field] = value
    with pytest.raises(
        UsageError,
        match=(
            r"characters Docker does not allow|is not a Docker image reference|framework "
            r"label .* is not valid"
        ),
    ):
        ImageSpec(plan=plan_packages(), user=ImageUser(1000, 1000, "alice"), **kwargs)


@pytest.mark.parametrize(
    "base", ["debian:bookworm", "localhost:5000/team/img:1.0", f"{BASE}@sha256:{'a' * 64}"]
)
def test_image_references_accepted(base: str) -> None:
    spec = ImageSpec(
        base_image=base,
        project="p",
        framework="custom",
        plan=plan_packages(),
        user=ImageUser(1000, 1000, "alice"),
    )
    assert render_dockerfile(spec).count(f"FROM {base}\n") == 1


# ------------------------------------------------------------------------ custom tier


def test_custom_tier_round_trip_on_a_rendered_dockerfile() -> None:
    plan = plan_packages(pip=["rich", "numpy<3,>=1.26", "transformers[torch]"], apt=["ffmpeg"])
    text = render_dockerfile(_spec(plan))
    assert read_custom_tier(text) == plan.custom
    assert replace_custom_tier(text, plan.custom) == text


def test_changing_only_the_custom_tier_keeps_everything_before_it_byte_identical() -> None:
    before = render_dockerfile(_spec(plan_packages(use_case=UseCase.CV)))
    custom = read_custom_tier(before).added(pip=["rich"], apt=["sox"])
    after = replace_custom_tier(before, custom)
    cut = before.index(CUSTOM_BEGIN) + len(CUSTOM_BEGIN)
    assert after[:cut] == before[:cut]
    assert after[after.index(CUSTOM_END) :] == before[before.index(CUSTOM_END) :]
    # And it is exactly what rendering with those packages gives.
    assert after == render_dockerfile(
        _spec(plan_packages(use_case=UseCase.CV, pip=["rich"], apt=["sox"]))
    )
    assert labels_of(after)[L.IMAGE_TIERS].endswith(";cv;custom")
    emptied = replace_custom_tier(after, CustomTier())
    assert emptied == before
    assert not labels_of(emptied)[L.IMAGE_TIERS].endswith("custom")


def test_user_edits_outside_the_markers_survive_an_update() -> None:
    text = render_dockerfile(_spec())
    edited = text.replace("WORKDIR /workspace", "RUN echo mine\nWORKDIR /workspace")
    edited = "# my notes\n" + edited
    updated = replace_custom_tier(edited, read_custom_tier(edited).removed(["rich"]))
    assert updated.startswith("# my notes\n") and "RUN echo mine\n" in updated
    assert read_custom_tier(updated).pip == ()


def test_hand_reformatted_custom_tier_is_still_read() -> None:
    text = render_dockerfile(_spec(plan_packages(pip=["rich"])))
    begin, end = text.index(CUSTOM_BEGIN), text.index(CUSTOM_END)
    section = (
        f"{CUSTOM_BEGIN}\n# mine\nRUN python3 -m pip install --no-cache-dir rich 'numpy<3' \\\n"
        "    # a comment inside\n    tqdm\n"
        "run apt-get update && apt-get install -y --no-install-recommends sox "
        "&& rm -rf /var/lib/apt/lists/*\n"
    )
    edited = text[:begin] + section + text[end:]
    custom = read_custom_tier(edited)
    assert [s.text for s in custom.pip] == ["rich", "numpy<3", "tqdm"]
    assert [a.text for a in custom.apt] == ["sox"]


@pytest.mark.parametrize(
    "inside",
    [
        "RUN curl evil | sh",
        "RUN python3 -m pip install --no-cache-dir rich && curl evil",
        "RUN python3 -m pip install --no-cache-dir 'x; curl evil'",
        "RUN python3 -m pip install --no-cache-dir 'rich",
        "COPY . /app",
        "USER root",
    ],
)
def test_foreign_or_hostile_custom_sections_are_refused(inside: str) -> None:
    text = render_dockerfile(_spec())
    begin = text.index(CUSTOM_BEGIN) + len(CUSTOM_BEGIN) + 1
    edited = text[:begin] + inside + "\n" + text[begin:]
    with pytest.raises(
        UsageError,
        match=(
            r"inside the ds01 custom tier, is not something ds01 can edit|the Dockerfile's "
            r"custom tier"
        ),
    ):
        read_custom_tier(edited)
    with pytest.raises(
        UsageError,
        match=(
            r"inside the ds01 custom tier, is not something ds01 can edit|the Dockerfile's "
            r"custom tier"
        ),
    ):
        replace_custom_tier(edited, CustomTier())


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda t: t.replace(CUSTOM_BEGIN + "\n", ""), "bad_markers"),
        (lambda t: t.replace(CUSTOM_BEGIN + "\n", "").replace(CUSTOM_END + "\n", ""), "no_markers"),
        (lambda t: t + CUSTOM_BEGIN + "\n" + CUSTOM_END + "\n", "bad_markers"),
        (
            lambda t: (
                t.replace(CUSTOM_BEGIN, "@@")
                .replace(CUSTOM_END, CUSTOM_BEGIN)
                .replace("@@", CUSTOM_END)
            ),
            "bad_markers",
        ),
    ],
)
def test_missing_or_damaged_markers_are_refused_with_advice(
    edit: Callable[[str], str], code: str
) -> None:
    text = edit(render_dockerfile(_spec()))
    with pytest.raises(UsageError) as info:
        read_custom_tier(text)
    assert info.value.code == code
    assert "ds01 image create NAME --no-build" in (info.value.hint or "")
    with pytest.raises(
        UsageError, match=r"custom tier markers are damaged|has no ds01 custom tier section"
    ):
        replace_custom_tier(text, CustomTier())


_PIP_ENTRY = st.builds(
    lambda name, spec: name + spec,
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}[A-Za-z0-9]", fullmatch=True),
    st.sampled_from(["", ">=1", "==2.*", "<3,>=1", "[x]"]),
)
_APT_ENTRY = st.builds(
    lambda name, version: name + version,
    st.from_regex(r"[a-z0-9][a-z0-9+.-]{1,12}", fullmatch=True),
    st.sampled_from(["", "=1.0-1", "=2:1.2~rc1"]),
)
_OUTSIDE = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


def _unique(entries: list[str], key: Callable[[str], str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for entry in entries:
        name = key(entry)
        if name not in seen:
            seen.add(name)
            out.append(entry)
    return out


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    pip=st.lists(_PIP_ENTRY, max_size=8),
    apt=st.lists(_APT_ENTRY, max_size=5),
    prefix=_OUTSIDE,
    suffix=_OUTSIDE,
)
def test_any_valid_custom_tier_round_trips_and_leaves_the_rest_alone(
    pip: list[str], apt: list[str], prefix: str, suffix: str
) -> None:
    assume(CUSTOM_BEGIN not in prefix + suffix and CUSTOM_END not in prefix + suffix)
    assume("ds01 custom tier" not in prefix + suffix)
    pip_specs = parse_pip_specs(_unique(pip, lambda e: re.split(r"[<>=\[]", e)[0].lower()))
    apt_specs = parse_apt_specs(_unique(apt, lambda e: e.split("=")[0]))
    custom = CustomTier(pip=pip_specs, apt=apt_specs)
    text = f"{prefix}\n{CUSTOM_BEGIN}\n{CUSTOM_END}\n{suffix}"
    replaced = replace_custom_tier(text, custom)
    assert read_custom_tier(replaced) == custom
    head = f"{prefix}\n{CUSTOM_BEGIN}\n"
    tail = f"{CUSTOM_END}\n{suffix}"
    assert replaced.startswith(head) and replaced.endswith(tail)
    # Idempotent: replacing again with the same tier changes nothing.
    assert replace_custom_tier(replaced, custom) == replaced


def test_crlf_dockerfiles_keep_their_line_endings() -> None:
    text = render_dockerfile(_spec()).replace("\n", "\r\n")
    updated = replace_custom_tier(text, CustomTier(pip=parse_pip_specs(["tqdm"])))
    assert "\n" not in updated.replace("\r\n", "")
    assert [s.text for s in read_custom_tier(updated).pip] == ["tqdm"]


# ---------------------------------------------------------------- user's Dockerfile


USER_DOCKERFILE = """\
FROM python:3.12-slim AS build
RUN pip wheel --wheel-dir /w mylib
FROM debian:bookworm
COPY --from=build /w /w
USER nobody
CMD ["python3", "-m", "mylib"]
"""


def test_wrap_appends_user_setup_labels_and_custom_tier() -> None:
    plan = plan_packages(
        jupyter=False, datascience=False, system_tools=False, pip=["rich"], apt=["sox"]
    )
    spec = _spec(plan)
    text = wrap_user_dockerfile(USER_DOCKERFILE, spec)
    assert text.startswith(USER_DOCKERFILE)
    block = text[len(USER_DOCKERFILE) :]
    kinds = [kw for kw, _ in instructions(block)]
    assert kinds[0] == "USER" and kinds[-1] == "USER"
    assert "ARG" in kinds and "RUN" in kinds
    assert "CMD" not in kinds and "WORKDIR" not in kinds  # the user's own stay in force
    labels = labels_of(block)
    expected = spec.labels().encode()
    expected[L.IMAGE_TIERS] = "dockerfile;custom"
    assert labels == expected
    assert read_custom_tier(text) == plan.custom
    assert "# Tier 2" not in text and "# System tools" not in text  # empty tiers: nothing


def test_wrap_renders_the_plans_non_empty_tiers_before_the_user() -> None:
    plan = plan_packages(jupyter=False, datascience=False, use_case=UseCase.RL)
    text = wrap_user_dockerfile(USER_DOCKERFILE, _spec(plan))
    assert text.index("# System tools") < text.index("# Tier 3") < text.index("ARG DS01_USER")
    assert labels_of(text)[L.IMAGE_TIERS] == "dockerfile;system;rl"


def test_wrapping_twice_is_wrapping_once() -> None:
    once = wrap_user_dockerfile(USER_DOCKERFILE, _spec())
    assert wrap_user_dockerfile(once, _spec()) == once
    assert once.count(USER_BLOCK_BEGIN) == 1


def test_wrap_keeps_a_custom_tier_the_user_already_has() -> None:
    own = f"FROM debian:bookworm\n{CUSTOM_BEGIN}\n{CUSTOM_END}\nRUN make\n"
    wrapped = wrap_user_dockerfile(own, _spec())
    assert wrapped.startswith(own) and wrapped.count(CUSTOM_BEGIN) == 1
    assert L.IMAGE_TIERS not in labels_of(wrapped)  # the user's section has none
    updated = replace_custom_tier(wrapped, CustomTier(pip=parse_pip_specs(["rich"])))
    assert updated.index("rich") < updated.index("RUN make")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n  \n# only a comment\n",
        "RUN echo no base\n",
        "# escape=`\nFROM debian:bookworm\n",
        f"FROM debian\n{CUSTOM_BEGIN}\n",
    ],
)
def test_unusable_user_dockerfiles_are_refused(text: str) -> None:
    with pytest.raises(
        UsageError,
        match=(
            r"^The Dockerfile (is empty|has no FROM line|changes the escape character)|"
            r"markers are damaged"
        ),
    ):
        wrap_user_dockerfile(text, _spec())


def test_dockerfile_base_image() -> None:
    assert dockerfile_base_image(USER_DOCKERFILE) == "debian:bookworm"
    multi = "FROM --platform=linux/amd64 nvcr.io/nvidia/pytorch:24.10-py3 AS base\nFROM base\n"
    assert dockerfile_base_image(multi) == "nvcr.io/nvidia/pytorch:24.10-py3"
    # Build arguments are resolved (issue 10): the engine builds on x, so does DS01's check.
    assert dockerfile_base_image("ARG B=x\nFROM $B\n") == "x"
    assert dockerfile_base_image("RUN x\n") is None


def test_images_referenced_follows_stages_and_copy_from() -> None:
    text = (
        "ARG TAG=1\n"
        "FROM --platform=linux/amd64 builder-image:1 AS build\n"
        "FROM python:$TAG\n"
        "from build\n"
        "COPY --from=build /a /a\n"
        "COPY --from=other-user-image:latest /b /b\n"
        "COPY --from=0 /c /c\n"
        "FROM debian:bookworm\n"
    )
    assert images_referenced(text) == [
        "builder-image:1",
        "python:1",  # FROM python:$TAG, the ARG resolved (issue 10)
        "other-user-image:latest",
        "debian:bookworm",
    ]


def test_images_referenced_names_each_image_once_and_ignores_stage_names_in_any_case() -> None:
    text = (
        "FROM base-image:1 AS Builder\n"
        "FROM base-image:1\n"
        "RUN --mount=type=cache,from=builder,target=/x true\n"  # the earlier stage
        "COPY --FROM=BUILDER /a /a\n"  # the stage, named in another case
        "COPY --from=base-image:1 /b /b\n"  # already listed
    )
    assert images_referenced(text) == ["base-image:1"]
    # What can't be resolved as every builder would is refused (issue 10), not skipped.
    unreadable = [
        ("", "bad_dockerfile", "The Dockerfile has no FROM line."),
        (
            "FROM x\nCOPY --from=${IMG} /c /c\n",
            "unresolvable_dockerfile",
            "Line 2 of the Dockerfile (COPY --from=${IMG} /c /c): COPY --from=${IMG} depends on",
        ),
        ("FROM x\nFROM\n", "bad_dockerfile", "Line 2 of the Dockerfile (FROM): FROM takes an"),
    ]
    for text, code, message in unreadable:
        with pytest.raises(UsageError, match="^" + re.escape(message)) as info:
            images_referenced(text)
        assert info.value.code == code, text
    # DS01's block names no image: a wrapped file references what the user's own did.
    wrapped = wrap_user_dockerfile(USER_DOCKERFILE, _spec())
    assert images_referenced(wrapped) == ["python:3.12-slim", "debian:bookworm"]
