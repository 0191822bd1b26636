"""Shared test fixtures: paths to ../shared, a clean environment, and the skip policy.

Skip policy: on a developer's machine a test whose environment is missing (no ../shared,
no engine, not root, no pexpect) skips with a reason. Under CI (``DS01_REQUIRE_DOCKER=1``)
every skip is a failure unless :data:`EXPECTED_SKIPS` names it with a reason, so a missing
fixture or engine can never turn CI green by skipping. Every run ends with a line counting
the skips.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.adapters.docker_engine import DockerEngine
from ds01.errors import EngineError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DS01_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"

#: Skips CI accepts, by test node id (prefix), each with the reason it may skip there.
#: Empty: in CI's setup (root, ../shared, Docker with cgroupfs v1, pexpect) every test runs.
EXPECTED_SKIPS: dict[str, str] = {}


def require_environment() -> bool:
    """True under CI: a missing environment is a failure, not a skip."""
    return os.environ.get("DS01_REQUIRE_DOCKER") == "1"


#: The hermetic base image (scripts/hermetic-base.sh) every Docker test builds on.
BASE_IMAGE = "ds01-test/bookworm-base:latest"


def reachable_docker_engine() -> DockerEngine:
    """The test daemon with the hermetic base image; skips without them (fails under CI)."""
    engine = DockerEngine()
    try:
        engine.info()
    except EngineError as exc:
        if require_environment():
            pytest.fail(f"DS01_REQUIRE_DOCKER=1 but no Docker engine: {exc}")
        pytest.skip(f"no Docker engine reachable: {exc}")
    if engine.image(BASE_IMAGE) is None:
        message = f"hermetic base image {BASE_IMAGE} missing: run scripts/hermetic-base.sh"
        if require_environment():
            pytest.fail(message)
        pytest.skip(message)
    return engine


def _expected(nodeid: str) -> str | None:
    for prefix, reason in EXPECTED_SKIPS.items():
        if nodeid.startswith(prefix):
            return reason
    return None


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


class _SkipCounter:
    def __init__(self) -> None:
        self.expected: list[str] = []
        self.unexpected: list[str] = []  # local runs only: under CI these became failures
        self.refused: list[str] = []  # under CI: skips turned into failures


_SKIPS = _SkipCounter()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.skipped or hasattr(report, "wasxfail"):
        return report  # an xfail is reported as a skip; it is not one
    reason = _skip_reason(report)
    if _expected(item.nodeid) is not None:
        _SKIPS.expected.append(item.nodeid)
    elif require_environment():
        _SKIPS.refused.append(item.nodeid)
        report.outcome = "failed"
        report.longrepr = (
            f"DS01_REQUIRE_DOCKER=1 (CI) but this test skipped: {reason}\n"
            "CI must run every test: provide what it needs (../shared, the Docker engine, "
            "root, the dev dependencies), or add it to EXPECTED_SKIPS in tests/conftest.py "
            "with the reason it may skip in CI."
        )
    else:
        _SKIPS.unexpected.append(item.nodeid)
    return report


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # A module-level skip (importorskip at import) skips every test in it at collection.
    if report.skipped and _expected(report.nodeid) is None:
        if require_environment():
            _SKIPS.refused.append(report.nodeid)
        else:
            _SKIPS.unexpected.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if require_environment() and _SKIPS.refused and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total = len(_SKIPS.expected) + len(_SKIPS.unexpected) + len(_SKIPS.refused)
    line = f"ds01 skips: {total} ({len(_SKIPS.expected)} expected"
    if require_environment():
        line += f", {len(_SKIPS.refused)} refused under DS01_REQUIRE_DOCKER=1)"
    else:
        line += f", {len(_SKIPS.unexpected)} environment skips; CI fails on these)"
    terminalreporter.write_line(line)
    for nodeid in _SKIPS.refused:
        terminalreporter.write_line(f"  refused skip: {nodeid}")


@pytest.fixture
def fixtures_dir() -> Path:
    """``../shared/fixtures``; skips with a reason when absent (fails under CI)."""
    if not FIXTURES.is_dir():
        message = f"shared fixtures not found at {FIXTURES} (set DS01_SHARED_DIR)"
        if require_environment():
            pytest.fail(f"DS01_REQUIRE_DOCKER=1 but {message}")
        pytest.skip(message)
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
