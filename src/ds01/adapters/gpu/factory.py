"""Choosing a GPU inventory backend: ``open_inventory`` and the ``auto`` chain.

``gpu.inventory`` in the configuration names the source of GPU facts::

    auto          NVML, else nvidia-smi, else none (see below)
    nvml          NVML through nvidia-ml-py              -> ds01.adapters.gpu.nvml
    nvidia-smi    parse nvidia-smi's CSV and list output -> ds01.adapters.gpu.smi
    file:PATH     a JSON document (CI, laptops, tests)   -> ds01.adapters.gpu.file
    none          no GPUs at all

``auto`` falls through to the next source only when the previous one is *unavailable*
(:class:`~ds01.errors.GpuUnavailableError`: nvidia-ml-py or libnvidia-ml missing, no
driver loaded, no ``nvidia-smi`` on PATH). When a source exists but fails (a GPU fallen
off the bus, a driver/library version mismatch, a timeout) the error is raised, not
hidden: silently answering "no GPUs" from a broken host would make every device look
free to the allocator and hide the fault from the admin. The first source that answers
is kept for the life of the object.

Importing this module is cheap on purpose, because every command opens an inventory
and most never read it: neither nvidia-ml-py (about 40 ms) nor pydantic is loaded until
a backend that needs it is used (see the import in :func:`open_inventory`). The backends
never import this module; the device rules they all apply live in
:mod:`ds01.domain.devices`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ds01.adapters.gpu.nvml import NvmlInventory
from ds01.adapters.gpu.smi import SmiInventory
from ds01.domain.devices import Inventory
from ds01.errors import ConfigError, GpuUnavailableError
from ds01.ports import GpuInventory

__all__ = ["INVENTORY_SPECS", "AutoInventory", "NoneInventory", "open_inventory"]

INVENTORY_SPECS = ("auto", "nvml", "nvidia-smi", "none", "file:PATH")


class NoneInventory:
    """No GPUs: the inventory of a host without NVIDIA hardware (``gpu.inventory: none``)."""

    name = "none"

    def read(self) -> Inventory:
        """Always the empty inventory."""
        return Inventory(source="none")


class AutoInventory:
    """NVML, else nvidia-smi, else none; decided on the first :meth:`read`.

    ``name`` is ``"auto"`` until then and afterwards the name of the backend that
    answered (``nvml``, ``nvidia-smi`` or ``none``). ``candidates`` lets tests hand in
    their own chain.
    """

    def __init__(self, candidates: Sequence[GpuInventory] | None = None) -> None:
        self.name = "auto"
        self._candidates: Sequence[GpuInventory] | None = candidates
        self._chosen: GpuInventory | None = None
        #: Why each skipped source was unavailable, for ``gpu status`` and debugging.
        self.skipped: list[tuple[str, str]] = []

    @property
    def chosen(self) -> GpuInventory | None:
        """The backend that answered, once one has."""
        return self._chosen

    def read(self) -> Inventory:
        """Read from the chosen backend, choosing it first if needed."""
        if self._chosen is not None:
            return self._chosen.read()
        candidates = self._candidates if self._candidates is not None else _auto_chain()
        for backend in candidates:
            try:
                inventory = backend.read()
            except GpuUnavailableError as exc:
                self.skipped.append((backend.name, exc.message))
                continue
            self._chosen = backend
            self.name = backend.name
            return inventory
        self._chosen = NoneInventory()
        self.name = self._chosen.name
        return self._chosen.read()


def _auto_chain() -> list[GpuInventory]:
    return [NvmlInventory(), SmiInventory()]


def open_inventory(spec: str) -> GpuInventory:
    """The backend named by ``gpu.inventory``: ``auto|nvml|nvidia-smi|none|file:PATH``.

    Opening does no I/O; the source is first touched by ``read()``. An unknown spec
    raises :class:`ConfigError` listing the accepted ones.
    """
    text = spec.strip()
    if text == "auto":
        return AutoInventory()
    if text == "none":
        return NoneInventory()
    if text == "nvml":
        return NvmlInventory()
    if text == "nvidia-smi":
        return SmiInventory()
    if text.startswith("file:"):
        path = text.removeprefix("file:").strip()
        if not path:
            raise ConfigError(
                "gpu.inventory 'file:' needs a path",
                hint="Write it as file:/path/to/inventory.json.",
            )
        # Imported here, not at the top: the file backend imports pydantic (tens of
        # milliseconds), which only a file:PATH inventory needs. The NVML and
        # nvidia-smi backends are cheap to import (NvmlInventory defers nvidia-ml-py,
        # about 40 ms, to its first read), so they are imported above. Not a cycle
        # breaker: no backend imports this module.
        from ds01.adapters.gpu.file import FileInventory

        return FileInventory(path)
    raise ConfigError(
        f"unknown GPU inventory source {spec!r}",
        hint="Set gpu.inventory to one of: " + ", ".join(INVENTORY_SPECS) + ".",
    )
