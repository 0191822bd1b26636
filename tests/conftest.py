"""Shared test fixtures: paths to ../shared and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DS01_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """``../shared/fixtures``; tests that need it skip with a reason when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set DS01_SHARED_DIR)")
    return FIXTURES


@pytest.fixture
def h200_dir(fixtures_dir: Path) -> Path:
    """Captures from a real NVIDIA H200 with MIG disabled."""
    return fixtures_dir / "gpu" / "h200-sxm-mig-disabled"


@pytest.fixture
def aime_dir(fixtures_dir: Path) -> Path:
    """AIME's real ml_images.repo catalogs (v1 and v2)."""
    return fixtures_dir / "aime"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's DS01 or AIME settings."""
    for key in ("DS01_CONFIG", "MLC_ARCH", "SUDO_UID", "SUDO_USER", "SUDO_GID", "NO_COLOR"):
        monkeypatch.delenv(key, raising=False)
    yield
