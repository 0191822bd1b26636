"""Catalog queries: ``ds01 catalog list``, and the architecture an image is chosen for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds01.domain.arch import host_arch
from ds01.errors import ErrorCode, UsageError

if TYPE_CHECKING:
    from ds01.services.context import AppContext

__all__ = ["CatalogRow", "catalog_rows", "resolve_arch"]


@dataclass(frozen=True)
class CatalogRow:
    """One line of ``ds01 catalog list --json``."""

    framework: str
    version: str
    archs: tuple[str, ...]
    image: str


def catalog_rows(
    ctx: AppContext, *, framework: str | None = None, arch: str | None = None
) -> list[CatalogRow]:
    """The catalog's entries (those of ``framework`` / for ``arch`` when given)."""
    entries = ctx.catalog.entries_for(framework=framework, arch=arch)
    return [CatalogRow(e.framework, e.version, e.archs, e.image) for e in entries]


def resolve_arch(ctx: AppContext, flag: str | None, *, required: bool) -> tuple[str | None, str]:
    """The catalog architecture: ``--arch``, then ``MLC_ARCH``, then the GPUs."""
    catalog = ctx.catalog
    gpus: tuple[Any, ...] = ()
    if flag is None and not ctx.environ.get("MLC_ARCH"):
        gpus = ctx.inventory.read().gpus
    resolution = host_arch(
        gpus,
        flag=flag,
        env=ctx.environ.get("MLC_ARCH") or None,
        catalog_archs=catalog.archs,
    )
    if resolution.arch is None and required:
        raise UsageError(
            "No GPU was found to choose the image architecture from.",
            hint=f"Pass --arch, one of: {', '.join(sorted(catalog.archs))} "
            "(or set MLC_ARCH). " + resolution.reason,
            code=ErrorCode.NO_ARCH,
        )
    return resolution.arch, resolution.reason
