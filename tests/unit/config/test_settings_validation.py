"""ds01.yaml values that used to pass and then broke later (issue 10, finding 10).

Each is refused when the file is loaded: exit 2, naming the file, the line and the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.config import loader
from ds01.config.loader import load_settings
from ds01.config.trust import TrustContext
from ds01.errors import ConfigError

ROOT = TrustContext(caller_uid=0, system_install=None)


@pytest.fixture(autouse=True)
def _any_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values only; what this host's engine can set is tested in test_engine_rlimits."""
    monkeypatch.setattr(loader, "engine_ceilings", lambda _env: None)


BAD = [
    ("gpu:\n  lock_timeout: 1e309\n", 2, "gpu.lock_timeout", "finite"),
    ("gpu:\n  lock_timeout: .inf\n", 2, "gpu.lock_timeout", "finite"),
    ("gpu:\n  lock_timeout: .nan\n", 2, "gpu.lock_timeout", "finite"),
    ("queue:\n  max_wait: 1e20\n", 2, "queue.max_wait", "less than or equal"),
    ("queue:\n  aging_interval: 0\n", 2, "queue.aging_interval", "greater than or equal to 1"),
    ("queue:\n  aging_step: 1e20\n", 2, "queue.aging_step", "integer"),
    ("build:\n  timeout: -.inf\n", 2, "build.timeout", "finite"),
    ("enforcement:\n  interval: 0\n", 2, "enforcement.interval", "greater than or equal to 1"),
    ("enforcement:\n  interval: .nan\n", 2, "enforcement.interval", "finite"),
    ("enforcement:\n  busy_share: .nan\n", 2, "enforcement.busy_share", "finite"),
    ("enforcement:\n  keep_alive_max: 1e309\n", 2, "enforcement.keep_alive_max", "finite"),
    ("enforcement:\n  sigterm_grace: 1e20\n", 2, "enforcement.sigterm_grace", "integer"),
    ('admin_group: ""\n', 1, "admin_group", "not a Linux group name"),
    ('admin_group: "a b"\n', 1, "admin_group", "not a Linux group name"),
    ("container:\n  stop_timeout: 1e20\n", 2, "container.stop_timeout", "integer"),
    ("container:\n  ulimits:\n    stack: -5\n", 3, "container.ulimits.stack", "out of range"),
    ("container:\n  ulimits:\n    nofile: 1e20\n", 3, "container.ulimits.nofile", "whole number"),
    (
        "container:\n  ulimits:\n    nofile: 100000000000000000000\n",
        3,
        "container.ulimits.nofile",
        "out of range",
    ),
    ("container:\n  ulimits:\n    nofile: -1\n", 2, "container.ulimits", "nofile cannot be -1"),
    ("container:\n  ulimits:\n    stack: true\n", 3, "container.ulimits.stack", "whole number"),
    ("container:\n  ulimits:\n    nofles: 10\n", 3, "container.ulimits.nofles", "not a ulimit"),
]


@pytest.mark.parametrize(("text", "line", "key", "words"), BAD)
def test_bad_values_are_refused_at_load(
    tmp_path: Path, text: str, line: int, key: str, words: str
) -> None:
    config = tmp_path / "ds01.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(config, trust=ROOT)
    assert err.value.exit_code == 2
    assert err.value.message.startswith(f"{config}:{line}: {key}: "), err.value.message
    assert words in err.value.message


GOOD = [
    ("container:\n  ulimits:\n    memlock: -1\n    stack: 67108864\n", "memlock", -1),
    ("container:\n  ulimits:\n    nofile: 65536\n", "nofile", 65536),
    ("admin_group: admins@ad.example.org\n", "admin_group", "admins@ad.example.org"),
    ("admin_group: null\n", "admin_group", None),
    ("gpu:\n  lock_timeout: 0\n", "lock_timeout", 0),
    ("queue:\n  max_wait: 0\n", "max_wait", 0),
]


@pytest.mark.parametrize(("text", "key", "value"), GOOD)
def test_legitimate_values_still_load(tmp_path: Path, text: str, key: str, value: object) -> None:
    config = tmp_path / "ds01.yaml"
    config.write_text(text)
    settings = load_settings(config, trust=ROOT)
    found: object = {
        "memlock": settings.container.ulimits.get("memlock"),
        "nofile": settings.container.ulimits.get("nofile"),
        "admin_group": settings.admin_group,
        "lock_timeout": settings.gpu.lock_timeout,
        "max_wait": settings.queue.max_wait,
    }[key]
    assert found == value
