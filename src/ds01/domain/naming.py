"""Names: containers (``<name>._.<uid>``, as AIME does) and per-user image names."""

from __future__ import annotations

import hashlib
import re

from ds01.errors import ErrorCode, UsageError

__all__ = [
    "MAX_NAME_LENGTH",
    "TAG_SEPARATOR",
    "container_tag",
    "docker_safe_component",
    "project_image_name",
    "split_tag",
    "validate_name",
]

TAG_SEPARATOR = "._."
MAX_NAME_LENGTH = 64

_ALLOWED_FIRST = re.compile(r"[A-Za-z0-9]")
_ALLOWED = re.compile(r"[A-Za-z0-9_.-]")


def validate_name(name: str, *, what: str = "container name") -> str:
    """Return ``name`` if Docker accepts it as a container name; else raise exit 2.

    AIME accepts ``#`` (Docker then rejects the name, silently) and a leading ``-``/``_``;
    we refuse both up front, and ``._.`` which would break the ``<name>._.<uid>`` tag.
    """
    if not name:
        raise UsageError(f"The {what} is empty.", hint="Give a name such as 'my-project'.")
    bad = sorted({c for c in name if not _ALLOWED.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise UsageError(
            f"The {what} {name!r} contains characters Docker does not allow: {shown}.",
            hint="Use letters, digits, '_', '.' and '-' only.",
            code=ErrorCode.INVALID_NAME,
        )
    if not _ALLOWED_FIRST.fullmatch(name[0]):
        raise UsageError(
            f"The {what} {name!r} must start with a letter or a digit, not {name[0]!r}.",
            code=ErrorCode.INVALID_NAME,
        )
    if TAG_SEPARATOR in name:
        raise UsageError(
            f"The {what} {name!r} must not contain {TAG_SEPARATOR!r}: DS01 and AIME use it "
            "to separate the name from the user id.",
            code=ErrorCode.INVALID_NAME,
        )
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"The {what} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed.",
            code=ErrorCode.INVALID_NAME,
        )
    return name


def container_tag(name: str, uid: int) -> str:
    """The Docker container name AIME uses: ``<name>._.<uid>``."""
    return f"{name}{TAG_SEPARATOR}{uid}"


def split_tag(tag: str) -> tuple[str, int | None]:
    """``'pt._.1000'`` -> ``('pt', 1000)``; a bare legacy name gives ``(name, None)``."""
    tag = tag.lstrip("/")
    name, sep, uid = tag.rpartition(TAG_SEPARATOR)
    if sep and uid.isdigit():
        return name, int(uid)
    return tag, None


def docker_safe_component(text: str) -> str:
    """``text`` as a lower-case Docker repository path component, collision-free.

    Docker repository names allow ``[a-z0-9]`` separated by ``.``, ``_``, ``__`` or
    ``-``. Anything we have to change (``a.b@Domain``) gets a short hash of the original
    appended, so two different users never map to the same image name.
    """
    lowered = text.lower()
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", lowered)
    cleaned = re.sub(r"[._-]{2,}", "-", cleaned).strip("._-")
    if not cleaned:
        cleaned = "x"
    if cleaned != text:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        cleaned = f"{cleaned}-{digest}"
    return cleaned


def project_image_name(project: str, user: str) -> str:
    """The plan's image convention ``<project>-<user>-image:latest``, valid for Docker."""
    return f"{docker_safe_component(project)}-{docker_safe_component(user)}-image:latest"
