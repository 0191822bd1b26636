"""Rendering a DS01 Dockerfile and validating its inputs (``domain/dockerfile``), exactly.

The expected Dockerfile is written out below section by section, as a reviewer reads it
(every template line, every filled-in value, every quote and continuation), so any change
of a rendered byte fails here; the validation errors are compared whole (message, hint,
code), with every length limit tested on, below and above its boundary.
"""

# ruff: noqa: E501 - the expected Dockerfile lines are as long as the rendered ones

from __future__ import annotations

import pytest

from ds01.domain.dockerfile import (
    BuildNetwork,
    ImageSpec,
    ImageUser,
    _fill,
    _raw,
    render_dockerfile,
)
from ds01.domain.labels import ImageLabels
from ds01.domain.package_specs import AptSpec, PipSpec
from ds01.domain.packages import PackagePlan, Tier, TierName
from ds01.errors import EXIT_BAD_INPUT, UsageError

BASE = "registry.example:5000/team/base:1.0"
JANE = ImageUser(uid=1001, gid=1002, login="Jane.Doe@Uni.EDU")
FULL_PLAN = PackagePlan(
    tiers=(
        Tier(TierName.SYSTEM, ("system",), apt=(AptSpec("git"), AptSpec("curl", "7.88"))),
        Tier(
            TierName.BASE,
            ("jupyter", "datascience"),
            pip=(PipSpec("jupyterlab", "jupyterlab"), PipSpec("numpy", "numpy<3")),
        ),
        Tier(TierName.REQUIREMENTS, ("requirements",)),  # empty: no section, no tag
        Tier(TierName.USE_CASE, ("cv",), pip=(PipSpec("opencv-python", "opencv-python"),)),
        Tier(
            TierName.CUSTOM,
            ("custom",),
            pip=(PipSpec("rich", "rich[jupyter]>=13"), PipSpec("a", "a==1")),
            apt=(AptSpec("ffmpeg"),),
        ),
    )
)
CERTS = BuildNetwork(ca_certificates=("ds01-ca/campus.crt", "x/b.crt"))


def _spec(
    plan: PackagePlan = FULL_PLAN,
    network: BuildNetwork | None = None,
    user: ImageUser = JANE,
) -> ImageSpec:
    return ImageSpec(
        base_image=BASE,
        project="my-cv",
        framework="Pytorch-2.5.1",
        plan=plan,
        user=user,
        network=network or BuildNetwork(),
    )


def _refusal(make: object, *args: object, **kwargs: object) -> UsageError:
    assert callable(make)
    with pytest.raises(UsageError) as info:
        make(*args, **kwargs)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert info.value.code == "invalid_image_spec"
    return info.value


# ----------------------------------------------------------------- the Dockerfile

HEADER = r"""# Dockerfile of the DS01 image my-cv-jane.doe-uni.edu-9cb9d8-image:latest
# (project my-cv, user Jane.Doe@Uni.EDU), written by `ds01 image create`.
#
# Docker builds it top to bottom, one layer per instruction, and reuses every layer above
# the first line that changed. So what changes most often comes last:
#   tier 1  framework     the base image (FROM)
#           system tools  apt packages every DS01 image gets
#   tier 2  base          Jupyter and core data science (or your requirements file)
#   tier 3  use case      the packages of --type
#           your user     your account, baked in so containers start at once
#   tier 4  custom        your own packages, between the 'ds01 custom tier' markers
#
# You may edit this file. `ds01 image update` rewrites only the lines between the two
# custom-tier markers, then rebuilds; everything above them comes from the cache."""

BASE_SECTION = r"""FROM registry.example:5000/team/base:1.0

# Labels every image on this base shares (the per-user ones come last).
LABEL aime.mlc.BASE_IMAGE="registry.example:5000/team/base:1.0" \
      aime.mlc.FRAMEWORK="Pytorch-2.5.1"
"""[:-1]  # ends in a quote

BUILD_SETTINGS = r"""# Build settings. apt must never stop to ask a question. The pip index comes from the DS01
# configuration as a build argument, and so do proxies (Docker's predefined HTTP_PROXY,
# HTTPS_PROXY and NO_PROXY arguments): none of them is stored in the image. Unset, pip
# uses PyPI.
ARG DEBIAN_FRONTEND=noninteractive
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST"""

CA_SECTION = r"""# Extra CA certificates (build.ca_certificates), e.g. for a campus proxy that inspects
# HTTPS. Single certificates join the system store; all of them, with the system's roots,
# also go into one bundle that pip, requests, curl and OpenSSL are told to use (the only
# way a multi-certificate bundle is trusted). It stays, so pip works in your containers.
COPY ds01-ca/campus.crt x/b.crt /usr/local/share/ca-certificates/ds01/
RUN set -eu; \
    bundle=/usr/local/share/ds01/ca-bundle.crt; \
    mkdir -p "$(dirname "$bundle")"; \
    if command -v update-ca-certificates >/dev/null 2>&1; then update-ca-certificates; fi; \
    pip_roots=$(python3 -c 'import pip._vendor.certifi as c; print(c.where())' 2>/dev/null \
        || true); \
    : > "$bundle"; \
    for roots in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
            "$pip_roots"; do \
        if [ -n "$roots" ] && [ -f "$roots" ]; then cat "$roots" >> "$bundle"; break; fi; \
    done; \
    for cert in /usr/local/share/ca-certificates/ds01/*.crt; do \
        cat "$cert" >> "$bundle"; echo >> "$bundle"; \
    done
ENV PIP_CERT=/usr/local/share/ds01/ca-bundle.crt \
    REQUESTS_CA_BUNDLE=/usr/local/share/ds01/ca-bundle.crt \
    SSL_CERT_FILE=/usr/local/share/ds01/ca-bundle.crt \
    CURL_CA_BUNDLE=/usr/local/share/ds01/ca-bundle.crt"""

PIP_ENVIRONMENT = r"""# pip installs into the image's own Python, as root, so every user sees the packages.
# Debian 12+ and Ubuntu 24.04+ mark their Python 'externally managed' (PEP 668) and refuse
# that; in an image nothing else manages it, so allow it (older pips ignore the variable).
# It stays set, so `pip install` inside your container works too.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore"""

SYSTEM_TOOLS = r"""# System tools, the same in every DS01 image (skipped where the image has no apt-get).
RUN set -eu; \
    if command -v apt-get >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends \
            git \
            curl=7.88; \
        rm -rf /var/lib/apt/lists/*; \
    else \
        echo "ds01: this image has no apt-get; skipping the system tools"; \
    fi"""

TIER_2 = r"""# Tier 2 - base: jupyter, datascience. Skip parts with --no-jupyter / --no-datascience.
RUN python3 -m pip install --no-cache-dir \
        jupyterlab \
        'numpy<3'"""

TIER_3 = r"""# Tier 3 - use case 'cv' (--type).
RUN python3 -m pip install --no-cache-dir \
        opencv-python"""

USER_SECTION = r"""# Your user, baked in: containers run as you (--user UID:GID) and start at once.
# Login Jane.Doe@Uni.EDU is the account jane_doe here (a name every base accepts).
# An account already holding your uid or name (such as 'ubuntu' in newer bases) is removed
# first; a group holding your gid is reused. --no-log-init and the emptied lastlog/faillog
# keep a high uid from creating huge sparse files. You get passwordless sudo in the container.
ARG DS01_USER_UID=1001
ARG DS01_USER_GID=1002
ARG DS01_USER_NAME=jane_doe
ARG DS01_USER_LOGIN=Jane.Doe@Uni.EDU
RUN set -eu; \
    uid="$DS01_USER_UID"; gid="$DS01_USER_GID"; name="$DS01_USER_NAME"; home="/home/$name"; \
    lookup() { awk -F: -v want="$2" -v col="$3" -v out="$4" \
        '$col == want { print $out; exit }' "$1"; }; \
    if command -v useradd >/dev/null 2>&1; then tools=shadow; \
    elif command -v adduser >/dev/null 2>&1; then tools=busybox; \
    else echo "ds01 user setup: this image has neither useradd nor adduser" >&2; exit 1; fi; \
    drop_user() { echo "ds01 user setup: removing $1, which holds uid $uid or name $name"; \
        if [ "$tools" = shadow ]; then userdel "$1"; else deluser "$1"; fi; }; \
    old=$(lookup /etc/passwd "$uid" 3 1); \
    if [ -n "$old" ]; then drop_user "$old"; fi; \
    old_uid=$(lookup /etc/passwd "$name" 1 3); \
    if [ -n "$old_uid" ]; then \
        if [ "$old_uid" -lt 1000 ]; then \
            echo "ds01 user setup: $name is a system account here" >&2; exit 1; fi; \
        drop_user "$name"; \
    fi; \
    group=$(lookup /etc/group "$gid" 3 1); \
    if [ -z "$group" ]; then \
        group="$name"; \
        if [ -n "$(lookup /etc/group "$name" 1 1)" ]; then group="g$gid"; fi; \
        if [ "$tools" = shadow ]; then groupadd --gid "$gid" "$group"; \
        else addgroup -g "$gid" "$group"; fi; \
    fi; \
    shell=/bin/sh; if [ -x /bin/bash ]; then shell=/bin/bash; fi; \
    mkdir -p /home; \
    if [ "$tools" = shadow ]; then \
        useradd --no-log-init --uid "$uid" --gid "$gid" --home-dir "$home" --create-home \
            --shell "$shell" --comment "$DS01_USER_LOGIN" "$name"; \
    else \
        adduser -D -u "$uid" -G "$group" -h "$home" -s "$shell" -g "$DS01_USER_LOGIN" "$name"; \
    fi; \
    for log in /var/log/lastlog /var/log/faillog; do \
        if [ -f "$log" ]; then : > "$log"; fi; \
    done; \
    mkdir -p "$home/.local/bin"; \
    chown -R "$uid:$gid" "$home"; \
    mkdir -p /etc/sudoers.d; \
    echo "$name ALL=(ALL:ALL) NOPASSWD: ALL" > /etc/sudoers.d/ds01-user; \
    chmod 0440 /etc/sudoers.d/ds01-user; \
    if ! command -v sudo >/dev/null 2>&1; then \
        echo "ds01 user setup: note: no sudo in this image; its rule waits for it"; fi; \
    if [ "$(id -u "$name")" != "$uid" ] || [ "$(id -g "$name")" != "$gid" ]; then \
        echo "ds01 user setup: $name did not get uid $uid and gid $gid" >&2; exit 1; fi; \
    echo "ds01 user setup: $name (uid $uid, gid $gid, home $home) is ready"
ENV PATH=/home/jane_doe/.local/bin:${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"""

CUSTOM_SECTION = r"""# >>> ds01 custom tier >>>
# Tier 4 - custom: your own packages (--pip/--apt, `ds01 image update --add-pip/
# --add-apt/--remove`). ds01 rewrites everything between the two marker lines; you
# may edit here too: keep one package per line and the RUN lines' shape.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ffmpeg \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m pip install --no-cache-dir \
        'rich[jupyter]>=13' \
        a==1
LABEL aime.mlc.DS01_TIERS="framework;system;jupyter;datascience;cv;custom"
# <<< ds01 custom tier <<<"""

RUNTIME_ENV = r"""# Caches live in your workspace, so downloads survive a new container.
ENV HF_HOME=/workspace/.cache/huggingface \
    TORCH_HOME=/workspace/.cache/torch \
    PIP_CACHE_DIR=/workspace/.cache/pip \
    PYTHONUNBUFFERED=1"""

OWNER_LABELS = r"""# Who and what this image is for (read by `ds01 image list`).
LABEL aime.mlc.CUSTOM_IMAGE="my-cv-jane.doe-uni.edu-9cb9d8-image:latest" \
      aime.mlc.MAINTAINER="Jane.Doe@Uni.EDU" \
      aime.mlc.DS01_PROJECT="my-cv" \
      aime.mlc.DS01_USER_UID="1001" \
      aime.mlc.DS01_USER_GID="1002" \
      aime.mlc.DS01_USER_NAME="jane_doe"
"""[:-1]  # ends in a quote

FINALE = r"""# The image's default user is you, as DS01 and AIME's mlc start containers
# (--user UID:GID); root is one `sudo` away.
WORKDIR /workspace
USER 1001:1002
CMD ["bash"]"""


def _joined(*sections: str) -> str:
    return "\n\n".join(sections) + "\n"


def test_a_full_dockerfile_is_rendered_exactly() -> None:
    assert render_dockerfile(_spec(network=CERTS)) == _joined(
        HEADER,
        BASE_SECTION,
        BUILD_SETTINGS,
        CA_SECTION,
        PIP_ENVIRONMENT,
        SYSTEM_TOOLS,
        TIER_2,
        TIER_3,
        USER_SECTION,
        CUSTOM_SECTION,
        RUNTIME_ENV,
        OWNER_LABELS,
        FINALE,
    )


def test_an_empty_plan_renders_only_the_fixed_sections() -> None:
    custom = r"""# >>> ds01 custom tier >>>
# Tier 4 - custom: your own packages (--pip/--apt, `ds01 image update --add-pip/
# --add-apt/--remove`). ds01 rewrites everything between the two marker lines; you
# may edit here too: keep one package per line and the RUN lines' shape.
LABEL aime.mlc.DS01_TIERS="framework"
# <<< ds01 custom tier <<<"""
    assert render_dockerfile(_spec(PackagePlan(tiers=()))) == _joined(
        HEADER,
        BASE_SECTION,
        BUILD_SETTINGS,
        PIP_ENVIRONMENT,
        USER_SECTION,
        custom,
        RUNTIME_ENV,
        OWNER_LABELS,
        FINALE,
    )


def test_a_requirements_tier_and_a_pip_only_custom_tier() -> None:
    plan = PackagePlan(
        tiers=(
            Tier(TierName.REQUIREMENTS, ("requirements",), pip=(PipSpec("torch", "torch"),)),
            Tier(TierName.CUSTOM, ("custom",), pip=(PipSpec("b", "b"),)),
        )
    )
    text = render_dockerfile(_spec(plan))
    requirements = r"""# Tiers 2-3, replaced by your requirements file (--requirements).
RUN python3 -m pip install --no-cache-dir \
        torch"""
    custom = r"""# may edit here too: keep one package per line and the RUN lines' shape.
RUN python3 -m pip install --no-cache-dir \
        b
LABEL aime.mlc.DS01_TIERS="framework;requirements;custom"
# <<< ds01 custom tier <<<"""
    assert f"\n\n{PIP_ENVIRONMENT}\n\n{requirements}\n\n# Your user, baked in" in text
    assert f"{custom}\n\n{RUNTIME_ENV}" in text


def test_an_apt_only_custom_tier() -> None:
    plan = PackagePlan(tiers=(Tier(TierName.CUSTOM, ("custom",), apt=(AptSpec("vim", "2:9"),)),))
    custom = r"""# may edit here too: keep one package per line and the RUN lines' shape.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        vim=2:9 \
 && rm -rf /var/lib/apt/lists/*
LABEL aime.mlc.DS01_TIERS="framework;custom"
# <<< ds01 custom tier <<<"""
    assert custom in render_dockerfile(_spec(plan))


def test_a_value_that_looks_like_a_placeholder_is_not_filled_again() -> None:
    user = ImageUser(uid=1001, gid=1002, login="a@HOME@")
    text = render_dockerfile(_spec(PackagePlan(tiers=()), user=user))
    assert "ARG DS01_USER_LOGIN=a@HOME@\n" in text
    assert "# (project my-cv, user a@HOME@), written by `ds01 image create`.\n" in text


@pytest.mark.parametrize(
    ("text", "shown"),
    [("x'y", '"x\'y"'), ("x\ny", "'x\\ny'")],
)
def test_a_package_that_cannot_be_one_shell_word_is_never_rendered(text: str, shown: str) -> None:
    plan = PackagePlan(tiers=(Tier(TierName.CUSTOM, ("custom",), pip=(PipSpec("x", text),)),))
    error = _refusal(render_dockerfile, _spec(plan))
    assert error.message == f"{shown} can't be written safely."
    assert error.hint == "Report this as a DS01 bug."


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("Az09._+=:-", "Az09._+=:-"),
        ("a b", "'a b'"),
        ("a>=1", "'a>=1'"),
        ("a[b]", "'a[b]'"),
        ("$x", "'$x'"),
        ("a~=1", "'a~=1'"),
    ],
)
def test_package_entries_are_quoted_only_where_the_shell_needs_it(text: str, word: str) -> None:
    plan = PackagePlan(tiers=(Tier(TierName.CUSTOM, ("custom",), pip=(PipSpec("x", text),)),))
    assert f"\n        {word}\nLABEL " in render_dockerfile(_spec(plan))


def test_a_label_value_that_cannot_be_written_is_refused() -> None:
    plan = PackagePlan(tiers=(Tier(TierName.BASE, ("a b",), pip=(PipSpec("x", "x"),)),))
    error = _refusal(render_dockerfile, _spec(plan))
    assert error.message == "Label aime.mlc.DS01_TIERS='framework;a b' can't be written safely."
    assert error.hint == "Check the input."


# ------------------------------------------------------------------------ the user

ID_HINT = "Ids are 0..4294967294."
LOGIN_HINT = (
    "User names may contain letters, digits and . _ @ + - (no spaces, quotes, '$', '\\' or "
    "line breaks)."
)


@pytest.mark.parametrize(
    ("uid", "gid", "message"),
    [
        (-1, 1000, "The uid -1 is not a valid id."),
        (4294967295, 1000, "The uid 4294967295 is not a valid id."),
        (1000, -1, "The gid -1 is not a valid id."),
        (1000, 4294967295, "The gid 4294967295 is not a valid id."),
        (True, 1000, "The uid True is not a valid id."),
        (1000, False, "The gid False is not a valid id."),
        ("1000", 1000, "The uid '1000' is not a valid id."),
        (1000, 1000.0, "The gid 1000.0 is not a valid id."),
    ],
)
def test_ids_outside_the_kernels_range_are_refused(uid: object, gid: object, message: str) -> None:
    error = _refusal(ImageUser, uid=uid, gid=gid, login="alice")
    assert (error.message, error.hint) == (message, ID_HINT)


def test_the_id_range_boundaries() -> None:
    user = ImageUser(uid=4294967294, gid=0, login="alice")
    assert (user.uid, user.gid) == (4294967294, 0)
    assert ImageUser(uid=1, gid=4294967294, login="alice").gid == 4294967294


def test_root_is_refused() -> None:
    error = _refusal(ImageUser, uid=0, gid=1000, login="alice")
    assert error.message == "DS01 does not build images for root (uid 0)."
    assert error.hint == (
        "Run ds01 as your own user; use sudo inside the container for root tasks."
    )


@pytest.mark.parametrize("login", ["a b", "", "-a", ".a", "a\n", "a'b", "a" * 257, "é"])
def test_logins_that_cannot_be_written_are_refused(login: str) -> None:
    error = _refusal(ImageUser, uid=1000, gid=1000, login=login)
    assert error.message == f"The user name {login!r} can't be written into an image safely."
    assert error.hint == LOGIN_HINT


@pytest.mark.parametrize("login", ["a", "_", "9", "a" * 256, "a.b_c@d+e-f", "A"])
def test_logins_that_can_be_written(login: str) -> None:
    assert ImageUser(uid=1000, gid=1000, login=login).login == login


def test_the_account_and_home_of_a_user() -> None:
    assert (JANE.account, JANE.home) == ("jane_doe", "/home/jane_doe")


# ---------------------------------------------------------------------- the network

CA_HINT = (
    "Name them like 'ds01-ca/campus.crt': relative, ending in .crt, letters, digits, '.', '_', '-'."
)


def test_bad_ca_names_are_listed_alone() -> None:
    error = _refusal(BuildNetwork, ca_certificates=("ok.crt", "a.pem", "b/../c.crt", "d/e.crt"))
    assert (
        error.message
        == "CA certificate file names ['a.pem', 'b/../c.crt'] can't be used in a build."
    )
    assert error.hint == CA_HINT


@pytest.mark.parametrize("name", ["a.crt", "A9._-.crt", "dir/sub/x.crt", "0.crt"])
def test_good_ca_names(name: str) -> None:
    assert BuildNetwork(ca_certificates=(name,)).ca_certificates == (name,)


def test_ca_certificates_sharing_a_file_name_are_refused() -> None:
    error = _refusal(BuildNetwork, ca_certificates=("a/x.crt", "b/x.crt"))
    assert (error.message, error.hint) == (
        "Two CA certificates share a file name.",
        "Give each a unique name.",
    )
    # The file name is what follows the last "/": the directories do not make it unique.
    error = _refusal(BuildNetwork, ca_certificates=("a/b/x.crt", "c/x.crt"))
    assert error.message == "Two CA certificates share a file name."
    assert BuildNetwork(ca_certificates=("a/x.crt", "a/y.crt")).ca_certificates == (
        "a/x.crt",
        "a/y.crt",
    )


@pytest.mark.parametrize("what", ["pip_index_url", "http_proxy", "https_proxy", "no_proxy"])
@pytest.mark.parametrize("value", ["a b", "", "x\ny", "a'b", 'a"b', "a\\b", "a<b"])
def test_settings_that_are_not_urls_are_refused(what: str, value: str) -> None:
    error = _refusal(BuildNetwork, **{what: value})
    assert (error.message, error.hint) == (
        f"build.{what} {value!r} is not a URL.",
        "Check ds01.yaml.",
    )


@pytest.mark.parametrize("url", ["ftp://m/simple", "m/simple", "file:///simple"])
def test_the_pip_index_must_be_http(url: str) -> None:
    error = _refusal(BuildNetwork, pip_index_url=url)
    assert (error.message, error.hint) == (
        "build.pip_index_url must be http(s).",
        "Check ds01.yaml.",
    )


def test_build_args_hold_exactly_what_is_set() -> None:
    assert BuildNetwork().build_args() == {}
    assert BuildNetwork(pip_index_url="HTTP://Mirror.Example:8080/simple").build_args() == {
        "PIP_INDEX_URL": "HTTP://Mirror.Example:8080/simple",
        "PIP_TRUSTED_HOST": "mirror.example",
    }
    assert BuildNetwork(pip_index_url="https://m.example/simple").build_args() == {
        "PIP_INDEX_URL": "https://m.example/simple"
    }
    assert BuildNetwork(pip_index_url="http:///simple").build_args() == {
        "PIP_INDEX_URL": "http:///simple"
    }
    assert BuildNetwork(https_proxy="http://p:1").build_args() == {
        "https_proxy": "http://p:1",
        "HTTPS_PROXY": "http://p:1",
    }
    assert BuildNetwork(no_proxy="a,b", http_proxy="http://q").build_args() == {
        "http_proxy": "http://q",
        "HTTP_PROXY": "http://q",
        "no_proxy": "a,b",
        "NO_PROXY": "a,b",
    }


# ------------------------------------------------------------------------- the spec

REF_HINT = "Use a name such as 'aimehub/pytorch-2.5.1-aime-cuda12.1.1' or 'debian:bookworm'."


def test_a_base_image_reference_may_be_255_characters_long() -> None:
    assert ImageSpec("a" * 255, "p", "custom", FULL_PLAN, JANE).base_image == "a" * 255
    error = _refusal(ImageSpec, "a" * 256, "p", "custom", FULL_PLAN, JANE)
    assert (error.message, error.hint) == (
        f"{'a' * 256!r} is not a Docker image reference.",
        REF_HINT,
    )


@pytest.mark.parametrize("base", ["Debian", "a b", "", "a:", "a@sha256:00", "-a"])
def test_bad_base_images_are_refused(base: str) -> None:
    error = _refusal(ImageSpec, base, "p", "custom", FULL_PLAN, JANE)
    assert (error.message, error.hint) == (f"{base!r} is not a Docker image reference.", REF_HINT)


@pytest.mark.parametrize("framework", ["a" * 65, "", "-a", "a b", "a/b"])
def test_bad_framework_labels_are_refused(framework: str) -> None:
    error = _refusal(ImageSpec, "cat", "p", framework, FULL_PLAN, JANE)
    assert (error.message, error.hint) == (
        f"The framework label {framework!r} is not valid.",
        "Use the catalog's '<Framework>-<version>' or 'custom'.",
    )


def test_a_framework_label_may_be_64_characters_long() -> None:
    framework = "A" + "a._+-" * 12 + "a" * 3
    assert len(framework) == 64
    assert ImageSpec("cat", "p", framework, FULL_PLAN, JANE).framework == framework


def test_a_bad_project_name_is_refused_as_a_project_name() -> None:
    with pytest.raises(UsageError) as info:
        ImageSpec("cat", "", "custom", FULL_PLAN, JANE)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert info.value.message == "The project name is empty."


def test_the_specs_image_name_and_labels() -> None:
    spec = _spec()
    assert spec.image_name == "my-cv-jane.doe-uni.edu-9cb9d8-image:latest"
    assert spec.labels() == ImageLabels(
        custom_image="my-cv-jane.doe-uni.edu-9cb9d8-image:latest",
        maintainer="Jane.Doe@Uni.EDU",
        base_image=BASE,
        framework="Pytorch-2.5.1",
        tiers=("framework", "system", "jupyter", "datascience", "cv", "custom"),
        project="my-cv",
        uid=1001,
        gid=1002,
        user="jane_doe",
    )


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("\\\nRUN a \\\n  b", "RUN a \\\n  b"),  # the backslash-newline that opens it goes
        ("RUN a \\\n", "RUN a \\\n"),  # one at the end stays: it is a continuation
        ("\\\n\\\nx", "\\\nx"),  # only one is removed
        ("x", "x"),
    ],
)
def test_raw_templates_lose_only_their_opening_backslash_newline(template: str, text: str) -> None:
    # Called at import time for the templates: tested directly, as the templates are read once.
    assert _raw(template) == text


def test_fill_replaces_only_the_placeholders_it_is_given() -> None:
    # A placeholder without a value stays as written (and the build would then fail on it).
    assert _fill("@A@ @NOPE@ @a@ @A @B@", A="1", B="@A@") == "1 @NOPE@ @a@ @A @A@"
