"""Dockerfiles of DS01 images: render one from an :class:`ImageSpec`.

Pure text in, text out. The build service writes the result to ``~/workspace/NAME/Dockerfile``
and builds it with Docker's classic builder (Docker 20.10 through the SDK), so nothing here
uses BuildKit-only syntax: no heredocs, no ``RUN --mount``; multi-line shell is one ``RUN``
with ``\\`` continuations.

Layer order (each line is one or more instructions; Docker reuses every layer above the
first one that changed):

1. ``FROM`` the framework image, and the labels every image of that base shares;
2. build settings: ``ARG`` s for the pip index (values come from the build service, never
   from this file), extra CA certificates, pip's environment (PEP 668);
3. system tools (apt), tier 2 base (one ``RUN``), tier 3 use case (one ``RUN``) - or the
   requirements tier in place of tiers 2-3;
4. the user, baked in (uid, gid, name, home, sudo);
5. tier 4, the custom tier, between marker lines that ``image update`` rewrites;
6. environment, per-user labels, ``WORKDIR``, ``USER``, ``CMD`` (metadata only).

The tiers label sits inside the custom section (its last line), so ``image update`` keeps it
current while touching nothing outside the markers. A change of the custom tier rebuilds
only its own ``RUN`` s and the metadata after them.

**Why the user comes after the package tiers.** Steps 1-3 depend only on the base image,
the configuration and the chosen tiers, never on who builds, so Docker's cache serves them
to every user on the host who picks the same base and tiers: a second student's "cold" build
reuses the first one's pip layers, and the layers are stored on disk once. The user layer is
cheap (a few seconds), and putting it before the custom tier means ``image update`` never
repeats it.

Wrapping a user's own Dockerfile and editing the custom tier of a written one live in
:mod:`ds01.domain.dockerfile_edit`, which builds on the sections rendered here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ds01.domain.labels import LIST_SEPARATOR, ImageLabels, L
from ds01.domain.naming import project_image_name, validate_name
from ds01.domain.packages import AptSpec, CustomTier, PackagePlan, PipSpec, Tier, TierName
from ds01.domain.user_setup import account_name
from ds01.errors import ErrorCode, UsageError

__all__ = [
    "CA_BUNDLE",
    "CUSTOM_BEGIN",
    "CUSTOM_END",
    "BuildNetwork",
    "ImageSpec",
    "ImageUser",
    "account_name",
    "render_dockerfile",
]

CUSTOM_BEGIN = "# >>> ds01 custom tier >>>"
CUSTOM_END = "# <<< ds01 custom tier <<<"
CA_DIR = "/usr/local/share/ca-certificates/ds01"
#: The bundle pip, requests, curl and OpenSSL are pointed at when CA certificates are set.
CA_BUNDLE = "/usr/local/share/ds01/ca-bundle.crt"
WORKSPACE = "/workspace"
SUDOERS_FILE = "/etc/sudoers.d/ds01-user"
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel

_LOGIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,255}")
_FRAMEWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9._@+:/,;=-]*")
_CA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*\.crt")
_URL_TEXT = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REF = re.compile(
    rf"(?:{_HOST}(?:\.{_HOST})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


# Accounts of Debian/Ubuntu base images that a user must never replace.
def _refuse(message: str, hint: str) -> UsageError:
    return UsageError(message, hint=hint, code=ErrorCode.INVALID_IMAGE_SPEC)


@dataclass(frozen=True)
class ImageUser:
    """The user an image is built for. Validated: nothing else reaches the Dockerfile."""

    uid: int
    gid: int
    login: str  # exactly as the system knows it, LDAP names included

    def __post_init__(self) -> None:
        for what, value in (("uid", self.uid), ("gid", self.gid)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UID:
                raise _refuse(f"The {what} {value!r} is not a valid id.", "Ids are 0..4294967294.")
        if self.uid == 0:
            raise _refuse(
                "DS01 does not build images for root (uid 0).",
                "Run ds01 as your own user; use sudo inside the container for root tasks.",
            )
        if not _LOGIN.fullmatch(self.login):
            raise _refuse(
                f"The user name {self.login!r} can't be written into an image safely.",
                "User names may contain letters, digits and . _ @ + - (no spaces, quotes, "
                "'$', '\\' or line breaks).",
            )

    @property
    def account(self) -> str:
        """The account name inside the image (see :func:`account_name`)."""
        return account_name(self.login)

    @property
    def home(self) -> str:
        return f"/home/{self.account}"


@dataclass(frozen=True)
class BuildNetwork:
    """Build networking from the configuration (``build.*``).

    ``ca_certificates`` are ``.crt`` file names relative to the build context (the build
    service puts the configured PEM files there). The pip index and proxies are passed as
    build arguments (:meth:`build_args`), never written into the Dockerfile: the proxies are
    Docker's predefined proxy ARGs, which Docker keeps out of the image's history and out of
    the cache key, and ``PIP_INDEX_URL`` is an ``ARG`` (not ``ENV``), so it lives only while
    the build runs. (Non-predefined ARG values do show in ``docker history``: keep
    credentials out of the index URL.)
    """

    ca_certificates: tuple[str, ...] = ()
    pip_index_url: str | None = None
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None

    def __post_init__(self) -> None:
        bad = [n for n in self.ca_certificates if not _CA_NAME.fullmatch(n)]
        if bad:
            raise _refuse(
                f"CA certificate file names {bad!r} can't be used in a build.",
                "Name them like 'ds01-ca/campus.crt': relative, ending in .crt, letters, "
                "digits, '.', '_', '-'.",
            )
        basenames = [n.rsplit("/", 1)[-1] for n in self.ca_certificates]
        if len(set(basenames)) != len(basenames):
            raise _refuse("Two CA certificates share a file name.", "Give each a unique name.")
        for what in ("pip_index_url", "http_proxy", "https_proxy", "no_proxy"):
            value = getattr(self, what)
            if value is not None and not _URL_TEXT.fullmatch(value):
                raise _refuse(f"build.{what} {value!r} is not a URL.", "Check ds01.yaml.")
        if self.pip_index_url is not None and urlsplit(self.pip_index_url).scheme not in (
            "http",
            "https",
        ):
            raise _refuse("build.pip_index_url must be http(s).", "Check ds01.yaml.")

    def build_args(self) -> dict[str, str]:
        """The ``buildargs`` the build service passes to Docker."""
        args: dict[str, str] = {}
        if self.pip_index_url:
            args["PIP_INDEX_URL"] = self.pip_index_url
            parts = urlsplit(self.pip_index_url)
            if parts.scheme == "http" and parts.hostname:
                args["PIP_TRUSTED_HOST"] = parts.hostname  # pip ignores plain-http indexes
        for name, value in (
            ("http_proxy", self.http_proxy),
            ("https_proxy", self.https_proxy),
            ("no_proxy", self.no_proxy),
        ):
            if value:  # curl reads only the lower-case http_proxy; others read either
                args[name] = value
                args[name.upper()] = value
        return args


@dataclass(frozen=True)
class ImageSpec:
    """Everything one DS01 Dockerfile depends on; validated on construction (exit 2)."""

    base_image: str
    project: str
    framework: str  # label value, e.g. "Pytorch-2.5.1", or "custom" for --base
    plan: PackagePlan
    user: ImageUser
    network: BuildNetwork = field(default_factory=BuildNetwork)

    def __post_init__(self) -> None:
        if len(self.base_image) > 255 or not _IMAGE_REF.fullmatch(self.base_image):
            raise _refuse(
                f"{self.base_image!r} is not a Docker image reference.",
                "Use a name such as 'aimehub/pytorch-2.5.1-aime-cuda12.1.1' or 'debian:bookworm'.",
            )
        validate_name(self.project, what="project name")
        if not _FRAMEWORK.fullmatch(self.framework):
            raise _refuse(
                f"The framework label {self.framework!r} is not valid.",
                "Use the catalog's '<Framework>-<version>' or 'custom'.",
            )

    @property
    def image_name(self) -> str:
        """``<project>-<user>-image:latest``."""
        return project_image_name(self.project, self.user.login)

    def labels(self) -> ImageLabels:
        return ImageLabels(
            custom_image=self.image_name,
            maintainer=self.user.login,
            base_image=self.base_image,
            framework=self.framework,
            tiers=self.plan.tier_labels(),
            project=self.project,
            uid=self.user.uid,
            gid=self.user.gid,
            user=self.user.account,
        )


# ----------------------------------------------------------------------------- rendering
# Fixed text is written as the Dockerfile reads; @NAME@ marks a validated value. Shell is
# POSIX sh (dash on Debian/Ubuntu); every physical line of a RUN already ends with the
# separator it needs, because Docker joins continuation lines into one.

_SHARED_LABELS = (L.BASE_IMAGE, L.IMAGE_FRAMEWORK)
_PIP_HEAD = ("python3", "-m", "pip", "install", "--no-cache-dir")
_APT_HEAD = ("apt-get", "update", "&&", "apt-get", "install", "-y", "--no-install-recommends")
_APT_TAIL = ("&&", "rm", "-rf", "/var/lib/apt/lists/*")


def _raw(text: str) -> str:
    """A raw-string template without the backslash-newline that opens it."""
    return text.removeprefix("\\\n")


_HEADER = """\
# Dockerfile of the DS01 image @IMAGE@
# (project @PROJECT@, user @LOGIN@), written by `ds01 image create`.
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

_BUILD_SETTINGS = """\
# Build settings. apt must never stop to ask a question. The pip index comes from the DS01
# configuration as a build argument, and so do proxies (Docker's predefined HTTP_PROXY,
# HTTPS_PROXY and NO_PROXY arguments): none of them is stored in the image. Unset, pip
# uses PyPI.
ARG DEBIAN_FRONTEND=noninteractive
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST"""

_CA_STEPS = _raw(
    r"""\
# Extra CA certificates (build.ca_certificates), e.g. for a campus proxy that inspects
# HTTPS. Single certificates join the system store; all of them, with the system's roots,
# also go into one bundle that pip, requests, curl and OpenSSL are told to use (the only
# way a multi-certificate bundle is trusted). It stays, so pip works in your containers.
COPY @SOURCES@ /usr/local/share/ca-certificates/ds01/
RUN set -eu; \
    bundle=@BUNDLE@; \
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
ENV PIP_CERT=@BUNDLE@ \
    REQUESTS_CA_BUNDLE=@BUNDLE@ \
    SSL_CERT_FILE=@BUNDLE@ \
    CURL_CA_BUNDLE=@BUNDLE@"""
)

_PIP_ENVIRONMENT = _raw(
    r"""\
# pip installs into the image's own Python, as root, so every user sees the packages.
# Debian 12+ and Ubuntu 24.04+ mark their Python 'externally managed' (PEP 668) and refuse
# that; in an image nothing else manages it, so allow it (older pips ignore the variable).
# It stays set, so `pip install` inside your container works too.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore"""
)

_SYSTEM_TOOLS = _raw(
    r"""\
# System tools, the same in every DS01 image (skipped where the image has no apt-get).
RUN set -eu; \
    if command -v apt-get >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends \
@PACKAGES@; \
        rm -rf /var/lib/apt/lists/*; \
    else \
        echo "ds01: this image has no apt-get; skipping the system tools"; \
    fi"""
)

_USER_SETUP = _raw(
    r"""\
# Your user, baked in: containers run as you (--user UID:GID) and start at once.
# Login @LOGIN@ is the account @ACCOUNT@ here (a name every base accepts).
# An account already holding your uid or name (such as 'ubuntu' in newer bases) is removed
# first; a group holding your gid is reused. --no-log-init and the emptied lastlog/faillog
# keep a high uid from creating huge sparse files. You get passwordless sudo in the container.
ARG DS01_USER_UID=@UID@
ARG DS01_USER_GID=@GID@
ARG DS01_USER_NAME=@ACCOUNT@
ARG DS01_USER_LOGIN=@LOGIN@
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
    echo "$name ALL=(ALL:ALL) NOPASSWD: ALL" > @SUDOERS@; \
    chmod 0440 @SUDOERS@; \
    if ! command -v sudo >/dev/null 2>&1; then \
        echo "ds01 user setup: note: no sudo in this image; its rule waits for it"; fi; \
    if [ "$(id -u "$name")" != "$uid" ] || [ "$(id -g "$name")" != "$gid" ]; then \
        echo "ds01 user setup: $name did not get uid $uid and gid $gid" >&2; exit 1; fi; \
    echo "ds01 user setup: $name (uid $uid, gid $gid, home $home) is ready"
ENV PATH=@HOME@/.local/bin:${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"""
)

_RUNTIME_ENV = _raw(
    r"""\
# Caches live in your workspace, so downloads survive a new container.
ENV HF_HOME=/workspace/.cache/huggingface \
    TORCH_HOME=/workspace/.cache/torch \
    PIP_CACHE_DIR=/workspace/.cache/pip \
    PYTHONUNBUFFERED=1"""
)

_FINALE = """\
# The image's default user is you, as DS01 and AIME's mlc start containers
# (--user UID:GID); root is one `sudo` away."""

_TIER_TITLES = {
    TierName.BASE: "# Tier 2 - base: {tags}. Skip parts with --no-jupyter / --no-datascience.",
    TierName.USE_CASE: "# Tier 3 - use case '{tags}' (--type).",
    TierName.REQUIREMENTS: "# Tiers 2-3, replaced by your requirements file (--requirements).",
}


def _fill(template: str, **values: str) -> str:
    # One pass, so a value that happens to contain "@NAME@" is never substituted again.
    return re.sub(r"@([A-Z]+)@", lambda m: values.get(m.group(1), m.group(0)), template)


def _word(text: str) -> str:
    """``text`` as one shell word. Validated specs never hold a quote, so single quotes do."""
    if "'" in text or "\n" in text:  # unreachable for validated specs; never render it
        raise _refuse(f"{text!r} can't be written safely.", "Report this as a DS01 bug.")
    return text if re.fullmatch(r"[A-Za-z0-9._+=:-]+", text) else f"'{text}'"


def _continued(lines: Sequence[str]) -> list[str]:
    return [f"{line} \\" for line in lines[:-1]] + [lines[-1]]


def _label(pairs: Sequence[tuple[str, str]]) -> list[str]:
    for key, value in pairs:
        if not _LABEL_VALUE.fullmatch(value):
            raise _refuse(f"Label {key}={value!r} can't be written safely.", "Check the input.")
    parts = [f'{key}="{value}"' for key, value in pairs]
    return _continued([f"LABEL {parts[0]}", *(f"      {p}" for p in parts[1:])])


def _pip_run(specs: Sequence[PipSpec]) -> list[str]:
    return _continued(["RUN " + " ".join(_PIP_HEAD), *(f"        {_word(s.text)}" for s in specs)])


def _apt_run(specs: Sequence[AptSpec]) -> list[str]:
    return _continued(
        [
            "RUN apt-get update",
            " && apt-get install -y --no-install-recommends",
            *(f"        {_word(s.text)}" for s in specs),
            " && rm -rf /var/lib/apt/lists/*",
        ]
    )


def _base_section(spec: ImageSpec) -> str:
    shared = [(k, v) for k, v in spec.labels().encode().items() if k in _SHARED_LABELS]
    lines = [
        "# Labels every image on this base shares (the per-user ones come last).",
        *_label(shared),
    ]
    return f"FROM {spec.base_image}\n\n" + "\n".join(lines)


def _ca_section(network: BuildNetwork) -> str:
    if not network.ca_certificates:
        return ""
    return _fill(_CA_STEPS, SOURCES=" ".join(network.ca_certificates), BUNDLE=CA_BUNDLE)


def _tier_section(tier: Tier) -> str:
    if tier.name is TierName.SYSTEM:
        packages = " \\\n".join(f"            {_word(s.text)}" for s in tier.apt)
        return _fill(_SYSTEM_TOOLS, PACKAGES=packages)
    title = _TIER_TITLES[tier.name].format(tags=", ".join(tier.tags))
    return "\n".join([title, *_pip_run(tier.pip)])


def _package_tiers(plan: PackagePlan) -> list[str]:
    return [_tier_section(t) for t in plan.tiers if t.name is not TierName.CUSTOM and not t.empty]


def _user_section(user: ImageUser) -> str:
    return _fill(
        _USER_SETUP,
        UID=str(user.uid),
        GID=str(user.gid),
        ACCOUNT=user.account,
        LOGIN=user.login,
        HOME=user.home,
        SUDOERS=SUDOERS_FILE,
    )


def _custom_inner(custom: CustomTier, tiers: Sequence[str] | None) -> list[str]:
    lines = [
        "# Tier 4 - custom: your own packages (--pip/--apt, `ds01 image update --add-pip/",
        "# --add-apt/--remove`). ds01 rewrites everything between the two marker lines; you",
        "# may edit here too: keep one package per line and the RUN lines' shape.",
    ]
    if custom.apt:
        lines += _apt_run(custom.apt)
    if custom.pip:
        lines += _pip_run(custom.pip)
    if tiers is not None:
        # ";" not ",": containers inherit image labels, and AIME's mlc list splits on ",".
        lines += _label([(L.IMAGE_TIERS, LIST_SEPARATOR.join(tiers))])
    return lines


def _custom_section(custom: CustomTier, tiers: Sequence[str] | None) -> str:
    return "\n".join([CUSTOM_BEGIN, *_custom_inner(custom, tiers), CUSTOM_END])


def _owner_labels(spec: ImageSpec, *, skip: Sequence[str]) -> str:
    own = [(k, v) for k, v in spec.labels().encode().items() if k not in skip]
    return "\n".join(
        ["# Who and what this image is for (read by `ds01 image list`).", *_label(own)]
    )


def _join(sections: Sequence[str]) -> str:
    return "\n\n".join(s for s in sections if s) + "\n"


def render_dockerfile(spec: ImageSpec) -> str:
    """The Dockerfile of ``spec``. Deterministic: the same spec gives the same bytes."""
    user = spec.user
    header = _fill(_HEADER, IMAGE=spec.image_name, PROJECT=spec.project, LOGIN=user.login)
    return _join(
        [
            header,
            _base_section(spec),
            _BUILD_SETTINGS,
            _ca_section(spec.network),
            _PIP_ENVIRONMENT,
            *_package_tiers(spec.plan),
            _user_section(user),
            _custom_section(spec.plan.custom, spec.plan.tier_labels()),
            _RUNTIME_ENV,
            _owner_labels(spec, skip=(*_SHARED_LABELS, L.IMAGE_TIERS)),
            f'{_FINALE}\nWORKDIR /workspace\nUSER {user.uid}:{user.gid}\nCMD ["bash"]',
        ]
    )
