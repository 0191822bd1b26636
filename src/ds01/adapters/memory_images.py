"""The image half of the in-memory engine: tags, ids, parents, labels, removal rules.

Docker's rules, as ``tests/conformance`` checks them against a real engine:

- a reference is a tag (``repo`` means ``repo:latest``), a full id (``sha256:...``) or a
  unique prefix of the id's hex digits;
- listing shows top-level images only: tagged ones, and untagged ones no image is built
  on (their tag shows as ``<none>:<none>``);
- removing a tag of an image that has other tags only untags it; removing its last tag
  removes the image too, unless a container uses it (``conflict``, or with ``force`` an
  untagged image that stays) or another image is built on it (it stays, untagged);
- removing by id: refused when an image is built on it or a running container uses it
  (even with ``force``), when a stopped container uses it or it has several tags
  (unless ``force``, which then removes it and all its tags).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ds01.domain.engine_types import ContainerFile, ImageInfo
from ds01.errors import ErrorCode, NotFoundError, UsageError

__all__ = ["ImageRecord", "ImageStore", "full_ref", "matches_labels"]

_HEX = re.compile(r"(?:sha256:)?[0-9a-f]{1,64}")


def full_ref(ref: str) -> str:
    """``repo`` -> ``repo:latest``; a ``:`` in a registry host:port is not a tag."""
    if "@" in ref:
        return ref
    head, sep, tail = ref.rpartition(":")
    if sep and head and "/" not in tail:
        return ref
    return f"{ref}:latest"


def matches_labels(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    """Docker's ``label`` filter: every ``k`` present, every ``k=v`` equal."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


@dataclass
class ImageRecord:
    """One local (or registry) image; ``files`` seed the filesystem of its containers."""

    id: str
    tags: list[str]
    labels: dict[str, str]
    size: int
    created: datetime
    user: str = ""
    parent: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    onbuild: tuple[str, ...] = ()
    files: dict[str, ContainerFile | None] = field(default_factory=dict)

    def info(self, *, listed: bool = False) -> ImageInfo:
        if listed:  # Docker's list call: whole seconds, no USER, a placeholder tag
            return ImageInfo(
                id=self.id,
                tags=tuple(self.tags) or ("<none>:<none>",),
                labels=dict(self.labels),
                size=self.size,
                created=self.created.replace(microsecond=0),
                user="",
            )
        return ImageInfo(
            id=self.id,
            tags=tuple(self.tags),
            labels=dict(self.labels),
            size=self.size,
            created=self.created,
            user=self.user,
        )


class ImageStore:
    """Local images, and a registry that ``pull`` copies from.

    ``in_use`` answers, for an image id, whether a running container uses it (``True``),
    only stopped ones (``False``) or none (``None``); the container half supplies it.
    """

    def __init__(self, in_use: Callable[[str], bool | None]) -> None:
        self._in_use = in_use
        self._local: dict[str, ImageRecord] = {}
        self._registry: dict[str, ImageRecord] = {}
        self._count = 0

    def new_id(self, seed: str) -> str:
        self._count += 1
        digest = hashlib.sha256(f"image:{self._count}:{seed}".encode()).hexdigest()
        return f"sha256:{digest}"

    def add(self, record: ImageRecord, *, local: bool = True) -> None:
        """Store ``record``; its tags move away from any image that had them (Docker)."""
        if not local:
            for tag in record.tags:
                self._registry[tag] = record
            return
        for tag in record.tags:
            self.untag_everywhere(tag)
        self._local[record.id] = record

    def untag_everywhere(self, tag: str) -> None:
        for other in self._local.values():
            if tag in other.tags:
                other.tags.remove(tag)

    # -- lookups ----------------------------------------------------------------------

    def find(self, ref: str) -> ImageRecord | None:
        tag = full_ref(ref)
        for record in self._local.values():
            if tag in record.tags:
                return record
        if _HEX.fullmatch(ref):
            digits = ref.removeprefix("sha256:")
            hits = [r for r in self._local.values() if r.id[7:].startswith(digits)]
            if len(hits) == 1:
                return hits[0]
        return None

    def children(self, image_id: str) -> list[str]:
        return [r.id for r in self._local.values() if r.parent == image_id]

    def listed(self, labels: Sequence[str]) -> list[ImageInfo]:
        top = [r for r in self._local.values() if r.tags or not self.children(r.id)]
        return [
            r.info(listed=True)
            for r in sorted(top, key=lambda r: r.created, reverse=True)
            if matches_labels(r.labels, labels)
        ]

    def from_registry(self, ref: str) -> ImageRecord:
        record = self._registry.get(full_ref(ref))
        if record is None:
            raise NotFoundError(
                f"pull {ref!r}: not found (pull access denied for {ref}, repository does "
                "not exist or may require 'docker login')."
            )
        return record

    # -- removal ----------------------------------------------------------------------

    def remove(self, ref: str, *, force: bool, users: Collection[str]) -> None:
        """Docker's ``rmi``; ``users`` names the containers using the image (messages)."""
        record = self.find(ref)
        if record is None:
            return
        tag = full_ref(ref)
        if tag in record.tags:
            self._remove_tag(record, tag, force=force, users=users)
        else:
            self._remove_by_id(record, force=force, users=users)

    def _remove_tag(
        self, record: ImageRecord, tag: str, *, force: bool, users: Collection[str]
    ) -> None:
        if len(record.tags) > 1:
            record.tags.remove(tag)
            return
        used = self._in_use(record.id)
        if used is not None and not force:
            raise _conflict(
                f"unable to remove repository reference {tag!r} (must force) - container "
                f"{_first(users)} is using its referenced image {_short(record.id)}"
            )
        record.tags.remove(tag)
        if used is None and not self.children(record.id):
            del self._local[record.id]

    def _remove_by_id(self, record: ImageRecord, *, force: bool, users: Collection[str]) -> None:
        short = _short(record.id)
        if self.children(record.id):
            raise _conflict(
                f"unable to delete {short} (cannot be forced) - image has dependent child images"
            )
        used = self._in_use(record.id)
        if used:
            raise _conflict(
                f"unable to delete {short} (cannot be forced) - image is being used "
                f"by running container {_first(users)}"
            )
        if used is False and not force:
            raise _conflict(
                f"unable to delete {short} (must be forced) - image is being used "
                f"by stopped container {_first(users)}"
            )
        if len(record.tags) > 1 and not force:
            raise _conflict(
                f"unable to delete {short} (must be forced) - image is referenced "
                "in multiple repositories"
            )
        del self._local[record.id]


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _first(ids: Collection[str]) -> str:
    return next(iter(ids), "")[:12]


def _conflict(what: str) -> UsageError:
    return UsageError(f"remove image: conflict: {what}", code=ErrorCode.CONFLICT)


def epoch() -> datetime:
    """The time of an image seeded without one."""
    return datetime(2024, 1, 1, tzinfo=UTC)
