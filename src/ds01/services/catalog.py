"""Catalog queries for ``ds01 catalog list``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ds01.services.context import AppContext

__all__ = ["catalog_rows"]


def catalog_rows(
    ctx: AppContext, *, framework: str | None = None, arch: str | None = None
) -> list[dict[str, Any]]:
    """Entries as the stable ``--json`` objects: framework, version, archs, image."""
    catalog = ctx.catalog
    entries = catalog.entries_for(framework=framework, arch=arch)
    return [
        {"framework": e.framework, "version": e.version, "archs": list(e.archs), "image": e.image}
        for e in entries
    ]
