"""ulimits the local Docker engine cannot set are refused at load (issue 10, finding 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.adapters import engine_rlimits
from ds01.adapters.engine_rlimits import UNLIMITED, engine_ceilings
from ds01.config import loader
from ds01.config.loader import load_settings
from ds01.config.trust import TrustContext
from ds01.errors import ConfigError

ROOT = TrustContext(caller_uid=0, system_install=None)

# /proc/PID/limits and the CapEff line of /proc/PID/status of a dockerd in a container
# without CAP_SYS_RESOURCE (captured on the CI machine).
LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max stack size            8388608              unlimited            bytes
Max processes             96362                96362                processes
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
"""
NO_CAP = "Name:\tdockerd\nCapEff:\t000001fffeffffff\n"
FULL_CAP = "Name:\tdockerd\nCapEff:\t000001ffffffffff\n"


def test_hard_limits_are_parsed() -> None:
    hard = engine_rlimits._hard_limits(LIMITS)
    assert hard == {
        "cpu": UNLIMITED,
        "stack": UNLIMITED,
        "nproc": 96362,
        "nofile": 20000,
        "memlock": 8388608,
    }
    assert not engine_rlimits._has_cap_sys_resource(NO_CAP)
    assert engine_rlimits._has_cap_sys_resource(FULL_CAP)


def test_a_remote_engine_is_unknown() -> None:
    assert engine_ceilings({"DOCKER_HOST": "tcp://10.0.0.1:2376"}) is None


def _config(tmp_path: Path, ulimits: str) -> Path:
    config = tmp_path / "ds01.yaml"
    config.write_text("container:\n  ulimits:\n" + ulimits)
    return config


def test_memlock_unlimited_is_refused_where_the_engine_cannot_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "engine_ceilings", lambda _env: {"memlock": 8388608})
    config = _config(tmp_path, "    stack: 67108864\n    memlock: -1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, trust=ROOT)
    assert err.value.exit_code == 2
    assert err.value.message.startswith(
        f"{config}:4: container.ulimits.memlock: -1 (unlimited) is more than the Docker "
        "engine on this host can set (8388608)"
    )
    ok = _config(tmp_path, "    memlock: 8388608\n")
    assert load_settings(ok, trust=ROOT).container.ulimits["memlock"] == 8388608


def test_memlock_unlimited_is_accepted_where_the_engine_can_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "engine_ceilings", lambda _env: {"nofile": 1048576})
    config = _config(tmp_path, "    memlock: -1\n    nofile: 1048576\n")
    assert load_settings(config, trust=ROOT).container.ulimits["memlock"] == -1
    monkeypatch.setattr(loader, "engine_ceilings", lambda _env: None)  # unknown engine
    assert load_settings(config, trust=ROOT).container.ulimits["memlock"] == -1


def test_nofile_above_nr_open_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "engine_ceilings", lambda _env: {"nofile": 1048576})
    with pytest.raises(ConfigError) as err:
        load_settings(_config(tmp_path, "    nofile: 2000000\n"), trust=ROOT)
    assert "container.ulimits.nofile" in err.value.message and "nr_open" in err.value.message


def test_defaults_are_not_probed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "engine_ceilings", lambda _env: pytest.fail("probed"))
    config = tmp_path / "ds01.yaml"
    config.write_text("admin_group: x\n")
    assert load_settings(config, trust=ROOT).container.ulimits == {"stack": 67108864}
