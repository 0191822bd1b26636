"""Every label DS01 reads or writes, in one place.

Containers carry AIME MLC v2's label set with exactly its names and value formats, so
AIME's own ``mlc list`` / ``mlc open`` work on containers DS01 creates. DS01's additions
live in the same ``aime.mlc.*`` namespace. Labels written by earlier DS01 deployments
(``ds01.*``) are read as a fallback and never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from ds01.domain.devices import parse_equivalents

__all__ = [
    "AIME",
    "AIME_CONTAINER_VERSION",
    "LEGACY",
    "LIST_SEPARATOR",
    "NO_MOUNT",
    "ContainerLabels",
    "ImageLabels",
    "L",
]

AIME = "aime.mlc"
#: AIME's container-setup version (v4 adds the models mount); not the tool version.
AIME_CONTAINER_VERSION = "4"
#: AIME's sentinel for "no data / models directory mounted".
NO_MOUNT = "-"
#: Separates list values inside one label. Not ",": AIME's ``mlc list`` splits Docker's
#: label string on commas, so a comma in any value breaks the listing of that user.
LIST_SEPARATOR = ";"


class L:
    """Label keys. AIME v2's set first, then DS01's additions (same namespace)."""

    # --- AIME MLC v2 (reference/aime-mlc-v2.md §2.3); value formats must not change.
    OWNER = AIME  # login user name
    NAME = f"{AIME}.NAME"  # display name (the part before "._.")
    USER = f"{AIME}.USER"  # login user name
    ARCH = f"{AIME}.ARCH"  # e.g. CUDA_ADA
    MLC_VERSION = f"{AIME}.MLC_VERSION"  # "4"
    WORK_MOUNT = f"{AIME}.WORK_MOUNT"  # host workspace path
    DATA_MOUNT = f"{AIME}.DATA_MOUNT"  # host data path or "-"
    MODELS_MOUNT = f"{AIME}.MODELS_MOUNT"  # host models path or "-"
    FRAMEWORK = f"{AIME}.FRAMEWORK"  # "<Framework>-<version>", e.g. Pytorch-2.4.0
    GPUS = f"{AIME}.GPUS"  # the devices given: "all", "0", "device=UUID;UUID" (AIME: -g)

    # --- DS01 additions (same namespace, upper case like AIME's).
    DS01_MANAGED = f"{AIME}.DS01_MANAGED"  # "true" on everything DS01 creates
    UID = f"{AIME}.DS01_UID"  # owner's numeric uid
    GROUP = f"{AIME}.DS01_GROUP"  # the policy group the limits came from
    CUSTOM_IMAGE = f"{AIME}.CUSTOM_IMAGE"  # image name when not a catalog image
    IMAGE = f"{AIME}.DS01_IMAGE"  # the image reference the container was created from
    CREATED_AT = f"{AIME}.DS01_CREATED_AT"  # ISO-8601 UTC
    GPU_UUIDS = f"{AIME}.GPU_UUIDS"  # ";"-separated device UUIDs held (empty: none)
    GPU_EQUIVALENTS = f"{AIME}.GPU_EQUIVALENTS"  # charged equivalents, exact ("3/7")
    GPU_PROFILE = f"{AIME}.GPU_PROFILE"  # MIG profile requested, if any
    GPU_ALLOCATED_AT = f"{AIME}.GPU_ALLOCATED_AT"  # ISO-8601 UTC
    QUEUE_ID = f"{AIME}.DS01_QUEUE_ID"  # queue entry that produced this container
    INTERFACE = f"{AIME}.DS01_INTERFACE"  # "cli" | "deploy" | "queue"
    TEST_RUN = f"{AIME}.DS01_TEST_RUN"  # set only by the test suite, to clean up its own
    # The process that made it ("boot:pid:start") and the journal of that create: a
    # container whose maker died before finishing is found and removed
    # (services.container.recovery).
    CREATOR = f"{AIME}.DS01_CREATOR"
    JOURNAL = f"{AIME}.DS01_JOURNAL"

    # --- Images built by DS01 (issue 5). User baked in at build time.
    MAINTAINER = f"{AIME}.MAINTAINER"  # user name the image belongs to
    BASE_IMAGE = f"{AIME}.BASE_IMAGE"
    IMAGE_FRAMEWORK = f"{AIME}.FRAMEWORK"  # same key and format as the container label
    IMAGE_TIERS = f"{AIME}.DS01_TIERS"  # ";"-separated tiers present
    IMAGE_PROJECT = f"{AIME}.DS01_PROJECT"
    BAKED_UID = f"{AIME}.DS01_USER_UID"
    BAKED_GID = f"{AIME}.DS01_USER_GID"
    BAKED_USER = f"{AIME}.DS01_USER_NAME"


class LEGACY:
    """Labels of earlier DS01 deployments: read as a fallback, never written."""

    USER = "ds01.user"
    MANAGED = "ds01.managed"
    NAME = "ds01.name"
    FRAMEWORK = "ds01.framework"
    ARCH = "ds01.arch"
    CUSTOM_IMAGE = "ds01.custom_image"
    GPU_UUIDS = "ds01.gpu.uuids"
    GPU_UUID = "ds01.gpu.uuid"
    CREATED_AT = "ds01.created_at"
    WORK_MOUNT = "ds01.work_mount"
    HAS_USER_SETUP = "ds01.has_user_setup"
    USER_ID = "ds01.user_id"
    GROUP_ID = "ds01.group_id"
    USERNAME = "ds01.username"


def _first(labels: Mapping[str, str], *keys: str) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value not in (None, ""):
            return value
    return None


def _mount(value: str | None) -> str | None:
    return None if value in (None, "", NO_MOUNT) else value


@dataclass(frozen=True)
class ContainerLabels:
    """The labels of one container, decoded. ``encode()`` gives the dict Docker stores.

    Decoding is tolerant (AIME-created containers lack DS01's keys; older DS01 ones use
    ``ds01.*``); encoding always writes the full AIME v2 set.
    """

    name: str
    user: str
    framework: str  # "<Framework>-<version>" or "custom"
    arch: str | None = None
    work_mount: str | None = None
    data_mount: str | None = None
    models_mount: str | None = None
    gpus: str = "0"
    uid: int | None = None
    group: str | None = None
    custom_image: str | None = None
    image: str | None = None
    created_at: str | None = None
    gpu_uuids: tuple[str, ...] = ()
    gpu_equivalents: Fraction = field(default_factory=Fraction)
    gpu_profile: str | None = None
    gpu_allocated_at: str | None = None
    queue_id: str | None = None
    interface: str | None = None
    creator: str | None = None
    journal: str | None = None
    ds01_managed: bool = False
    mlc_version: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def encode(self) -> dict[str, str]:
        out = {
            L.OWNER: self.user,
            L.NAME: self.name,
            L.USER: self.user,
            L.ARCH: self.arch or "",
            L.MLC_VERSION: AIME_CONTAINER_VERSION,
            L.WORK_MOUNT: self.work_mount or NO_MOUNT,
            L.DATA_MOUNT: self.data_mount or NO_MOUNT,
            L.MODELS_MOUNT: self.models_mount or NO_MOUNT,
            L.FRAMEWORK: self.framework,
            L.GPUS: self.gpus,
            L.DS01_MANAGED: "true",
            L.GPU_UUIDS: LIST_SEPARATOR.join(self.gpu_uuids),
            L.GPU_EQUIVALENTS: str(self.gpu_equivalents),
        }
        optional = {
            L.UID: None if self.uid is None else str(self.uid),
            L.GROUP: self.group,
            L.CUSTOM_IMAGE: self.custom_image,
            L.IMAGE: self.image,
            L.CREATED_AT: self.created_at,
            L.GPU_PROFILE: self.gpu_profile,
            L.GPU_ALLOCATED_AT: self.gpu_allocated_at,
            L.QUEUE_ID: self.queue_id,
            L.INTERFACE: self.interface,
            L.CREATOR: self.creator,
            L.JOURNAL: self.journal,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(dict(self.extra))
        return out

    @classmethod
    def decode(cls, labels: Mapping[str, str]) -> ContainerLabels | None:
        """Decode a container's labels; ``None`` if it is neither AIME's nor DS01's."""
        user = _first(labels, L.USER, L.OWNER, LEGACY.USER)
        if user is None:
            return None
        uuids_text = _first(labels, L.GPU_UUIDS, LEGACY.GPU_UUIDS, LEGACY.GPU_UUID) or ""
        # Earlier DS01 deployments wrote commas: accept both separators.
        uuids = tuple(
            u.strip()
            for u in uuids_text.replace(",", LIST_SEPARATOR).split(LIST_SEPARATOR)
            if u.strip()
        )
        eq_text = labels.get(L.GPU_EQUIVALENTS)
        try:
            equivalents = parse_equivalents(eq_text) if eq_text else Fraction(len(uuids))
        except (ValueError, ZeroDivisionError):
            equivalents = Fraction(-1)
        if equivalents < 0 or (equivalents == 0 and uuids):
            # A hand-edited label must not hide a holding: charge one GPU per device.
            equivalents = Fraction(len(uuids))
        uid_text = _first(labels, L.UID)
        return cls(
            name=_first(labels, L.NAME, LEGACY.NAME) or "",
            user=user,
            framework=_first(labels, L.FRAMEWORK, LEGACY.FRAMEWORK) or "",
            arch=_first(labels, L.ARCH, LEGACY.ARCH),
            work_mount=_mount(_first(labels, L.WORK_MOUNT, LEGACY.WORK_MOUNT)),
            data_mount=_mount(labels.get(L.DATA_MOUNT)),
            models_mount=_mount(labels.get(L.MODELS_MOUNT)),
            gpus=labels.get(L.GPUS, ""),
            uid=int(uid_text) if uid_text and uid_text.isdigit() else None,
            group=labels.get(L.GROUP),
            custom_image=_first(labels, L.CUSTOM_IMAGE, LEGACY.CUSTOM_IMAGE),
            image=labels.get(L.IMAGE),
            created_at=_first(labels, L.CREATED_AT, LEGACY.CREATED_AT),
            gpu_uuids=uuids,
            gpu_equivalents=equivalents,
            gpu_profile=labels.get(L.GPU_PROFILE),
            gpu_allocated_at=labels.get(L.GPU_ALLOCATED_AT),
            queue_id=labels.get(L.QUEUE_ID),
            interface=labels.get(L.INTERFACE),
            creator=labels.get(L.CREATOR),
            journal=labels.get(L.JOURNAL),
            ds01_managed=labels.get(L.DS01_MANAGED) == "true"
            or labels.get(LEGACY.MANAGED) == "true",
            mlc_version=labels.get(L.MLC_VERSION),
        )


@dataclass(frozen=True)
class ImageLabels:
    """Labels DS01 puts on images it builds (issue 5), decoded."""

    custom_image: str
    maintainer: str
    base_image: str
    framework: str
    tiers: tuple[str, ...]
    project: str
    uid: int | None
    gid: int | None
    user: str | None

    def encode(self) -> dict[str, str]:
        out = {
            L.CUSTOM_IMAGE: self.custom_image,
            L.MAINTAINER: self.maintainer,
            L.BASE_IMAGE: self.base_image,
            L.IMAGE_FRAMEWORK: self.framework,
            L.IMAGE_TIERS: LIST_SEPARATOR.join(self.tiers),
            L.IMAGE_PROJECT: self.project,
        }
        if self.uid is not None:
            out[L.BAKED_UID] = str(self.uid)
        if self.gid is not None:
            out[L.BAKED_GID] = str(self.gid)
        if self.user is not None:
            out[L.BAKED_USER] = self.user
        return out

    @classmethod
    def decode(cls, labels: Mapping[str, str]) -> ImageLabels | None:
        custom = _first(labels, L.CUSTOM_IMAGE, LEGACY.CUSTOM_IMAGE)
        if custom is None:
            return None
        uid = _first(labels, L.BAKED_UID, LEGACY.USER_ID)
        gid = _first(labels, L.BAKED_GID, LEGACY.GROUP_ID)
        return cls(
            custom_image=custom,
            maintainer=labels.get(L.MAINTAINER, ""),
            base_image=labels.get(L.BASE_IMAGE, ""),
            framework=labels.get(L.IMAGE_FRAMEWORK, ""),
            tiers=tuple(
                t
                for t in labels.get(L.IMAGE_TIERS, "")
                .replace(",", LIST_SEPARATOR)
                .split(LIST_SEPARATOR)
                if t
            ),
            project=labels.get(L.IMAGE_PROJECT, ""),
            uid=int(uid) if uid and uid.isdigit() else None,
            gid=int(gid) if gid and gid.isdigit() else None,
            user=_first(labels, L.BAKED_USER, LEGACY.USERNAME),
        )
