"""Which labels a Dockerfile may set, and the ones DS01 sets on every image it builds.

Pure. DS01 decides whose an image is from its labels (``aime.mlc.MAINTAINER`` and the project,
read by ``image list``, ``image delete``, ``container create`` and the base-image check), and
containers inherit the labels of their image, so a label under ``aime.mlc.*`` or ``ds01.*``
set by a Dockerfile could make an image or a container look like another user's, or like
one holding a GPU. Two rules close that:

- DS01 passes its :func:`ownership_labels` to the engine as build labels, which override
  whatever the Dockerfile or the base image says: custom image, maintainer, project, the
  baked uid, gid and account, and the base image the build really used.
- A Dockerfile may set a key under ``aime.mlc`` or ``ds01.`` (any case) only if it is
  descriptive (``FRAMEWORK``, ``DS01_TIERS``, ``BASE_IMAGE``: not trusted for anything) or
  repeats exactly DS01's own value (the lines ``image create`` writes). Anything else is
  refused with exit 2, before anything is written or built; so are such labels in
  ``ONBUILD`` (they would take effect in a build whose owner is not known now).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ds01.domain.dockerfile_refs import LabelUse
from ds01.domain.labels import AIME, L
from ds01.domain.user_setup import account_name
from ds01.errors import ErrorCode, UsageError

__all__ = ["DESCRIPTIVE", "check_labels", "is_reserved", "ownership_labels"]

#: DS01's keys a Dockerfile may set to anything: they describe, nobody trusts them.
DESCRIPTIVE = frozenset({L.BASE_IMAGE, L.IMAGE_FRAMEWORK, L.IMAGE_TIERS})


def is_reserved(key: str) -> bool:
    """A key in DS01's namespaces (AIME's ``aime.mlc*`` or the legacy ``ds01.*``)."""
    folded = key.lower()
    return folded.startswith((AIME, "ds01.")) or folded == "ds01"


def ownership_labels(
    *, image: str, project: str, login: str, uid: int, gid: int, base: str
) -> dict[str, str]:
    """The labels DS01 sets on a build of ``image`` for ``login``, overriding any other."""
    return {
        L.CUSTOM_IMAGE: image,
        L.MAINTAINER: login,
        L.IMAGE_PROJECT: project,
        L.BAKED_UID: str(uid),
        L.BAKED_GID: str(gid),
        L.BAKED_USER: account_name(login),
        L.BASE_IMAGE: base,
    }


def check_labels(labels: Sequence[LabelUse], ownership: Mapping[str, str]) -> None:
    """Refuse (exit 2) a label of DS01's namespaces that the Dockerfile may not set."""
    for use in labels:
        if not is_reserved(use.key):
            continue
        if not use.onbuild:
            if use.key in DESCRIPTIVE:
                continue
            if use.key in ownership and use.value == ownership[use.key]:
                continue  # DS01's own line, as `image create` wrote it
        shown = use.key if use.value is None else f"{use.key}={use.value}"
        why = (
            "an ONBUILD label would be set in a later build, whoever makes it"
            if use.onbuild
            else "labels under aime.mlc.* and ds01.* are DS01's: they say whose an image is"
        )
        expected = None if use.onbuild else ownership.get(use.key)
        mine = "" if expected is None else f" (DS01 sets {expected!r} itself)"
        raise UsageError(
            f"{use.place} sets the label {shown}{mine}; {why}, and a Dockerfile may not set them.",
            hint="Remove that label: DS01 labels every image with its owner, project and "
            "user itself. Put your own labels under a namespace of yours (e.g. "
            "org.example.note=...).",
            code=ErrorCode.RESERVED_LABEL,
            details={"key": use.key, "value": use.value, "where": use.place},
        )
