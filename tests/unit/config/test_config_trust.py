"""Who may decide DS01's configuration: root-controlled files only (issue 10, finding 1).

The ownership logic runs on real temporary trees: the tests run as root, so files are
made root's and then handed (``chown``) to a uid that is not root, the way a user's own
file looks; an injected ``lstat`` covers what a temp tree cannot show.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ds01.config.loader import load_settings
from ds01.config.settings import Settings
from ds01.config.trust import TrustContext, check_path, current_trust, require_trusted
from ds01.errors import ConfigError
from ds01.services.context import AppContext

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")

USER_UID = 54321  # not root; need not exist (ownership is all that is checked)
ALICE = TrustContext(caller_uid=1000, system_install=Path("/etc/ds01"))
ALICE_LAPTOP = TrustContext(caller_uid=1000, system_install=None)
ROOT = TrustContext(caller_uid=0, system_install=Path("/etc/ds01"))


def _tree(tmp_path: Path) -> Path:
    """A root-owned directory 0755 under pytest's root-owned temp directories."""
    top = tmp_path / "etc-ds01"
    top.mkdir()
    top.chmod(0o755)
    return top


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# ----------------------------------------------------------------------- check_path


def test_a_root_owned_file_in_root_owned_directories_is_trusted(tmp_path: Path) -> None:
    config = _write(_tree(tmp_path) / "ds01.yaml", "admin_group: x\n")
    verdict = check_path(config)
    assert verdict.trusted, verdict.reason
    assert verdict.real == config


@needs_root
def test_a_file_owned_by_a_user_is_not_trusted(tmp_path: Path) -> None:
    config = _write(_tree(tmp_path) / "ds01.yaml", "admin_group: x\n")
    os.chown(config, USER_UID, -1)
    verdict = check_path(config)
    assert not verdict.trusted
    assert verdict.reason is not None and f"uid {USER_UID}" in verdict.reason


@needs_root
def test_a_directory_owned_by_a_user_is_not_trusted(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    own = top / "alice"
    own.mkdir()
    os.chown(own, USER_UID, -1)
    config = _write(own / "ds01.yaml", "admin_group: x\n")  # root's file in her directory
    verdict = check_path(config)
    assert verdict.reason is not None and str(own) in verdict.reason


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_writable_by_group_or_others_is_not_trusted(tmp_path: Path, mode: int) -> None:
    config = _write(_tree(tmp_path) / "ds01.yaml", "x: 1\n", mode)
    verdict = check_path(config)
    assert verdict.reason is not None and "writable by its group or others" in verdict.reason


def test_a_group_writable_directory_that_is_not_sticky_is_not_trusted(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    top.chmod(0o775)
    config = _write(top / "ds01.yaml", "x: 1\n")
    verdict = check_path(config)
    assert verdict.reason is not None and "not sticky" in verdict.reason


def test_a_root_owned_sticky_directory_is_an_acceptable_ancestor(tmp_path: Path) -> None:
    # Like /tmp: others may add entries but cannot rename or remove root's.
    top = _tree(tmp_path)
    top.chmod(0o1777)
    inner = top / "ds01-it-x"
    inner.mkdir()
    inner.chmod(0o755)
    config = _write(inner / "ds01.yaml", "x: 1\n")
    assert check_path(config).trusted


def test_a_missing_file_is_trusted_only_where_nobody_else_may_create_it(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    assert check_path(top / "absent.yaml").trusted
    assert check_path(top / "absent-dir" / "absent.yaml").trusted
    top.chmod(0o1777)  # a sticky directory does not protect a name nobody holds yet
    verdict = check_path(top / "absent.yaml")
    assert verdict.reason is not None and "others may create it" in verdict.reason


@needs_root
def test_links_are_judged_by_where_they_lead(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    trusted = _write(top / "ds01.yaml", "x: 1\n")
    user_dir = tmp_path / "home-alice"
    user_dir.mkdir()
    os.chown(user_dir, USER_UID, -1)
    # A link in her directory to a root-controlled file: the real path is read, and
    # nothing on it can be swapped.
    link = user_dir / "link.yaml"
    link.symlink_to(trusted)
    verdict = check_path(link)
    assert verdict.trusted and verdict.real == trusted
    # A link in a root directory to her file: not trusted.
    hers = _write(user_dir / "hers.yaml", "x: 1\n")
    os.chown(hers, USER_UID, -1)
    bad_link = top / "bad.yaml"
    bad_link.symlink_to(hers)
    assert not check_path(bad_link).trusted


def test_a_component_replaced_by_a_link_during_the_check_is_refused(tmp_path: Path) -> None:
    config = _write(_tree(tmp_path) / "ds01.yaml", "x: 1\n")
    real_lstat = os.lstat

    def swapped(path: str) -> os.stat_result:
        st = real_lstat(path)
        if path == str(config.parent):
            fields = list(st)
            fields[0] = stat.S_IFLNK | 0o777
            return os.stat_result(fields)
        return st

    verdict = check_path(config, lstat=swapped)
    assert verdict.reason is not None and "changed while" in verdict.reason


def test_current_trust_finds_either_marker(tmp_path: Path) -> None:
    etc, var = tmp_path / "etc-ds01", tmp_path / "var-lib-ds01"
    assert current_trust((etc, var), uid=1000).system_install is None
    assert not current_trust((etc, var), uid=1000).enforced
    var.mkdir()
    assert current_trust((etc, var), uid=1000).system_install == var
    assert current_trust((etc, var), uid=1000).enforced
    etc.mkdir()
    assert current_trust((etc, var), uid=1000).system_install == etc
    assert not current_trust((etc, var), uid=0).enforced  # root (and sudo) may use any file


# ----------------------------------------------------------------------- load_settings


def _user_config(tmp_path: Path, text: str) -> Path:
    config = _write(_tree(tmp_path) / "ds01.yaml", text)
    if os.geteuid() == 0:
        os.chown(config, USER_UID, -1)
    else:  # pragma: no cover - the suite runs as root
        config.chmod(0o666)
    return config


ATTACK = "admin_group: ds01t-students\ncontainer:\n  allowed_mount_roots: ['/']\n"


def test_a_users_own_config_is_refused_on_a_system_install(tmp_path: Path) -> None:
    config = _user_config(tmp_path, ATTACK)
    with pytest.raises(ConfigError) as err:
        load_settings(config, trust=ALICE)
    assert err.value.exit_code == 2
    assert err.value.code == "untrusted_config"
    assert str(config) in err.value.message and "/etc/ds01 exists" in err.value.message
    assert "only root can change" in err.value.message
    assert err.value.hint and "chown root" in err.value.hint


def test_root_may_use_any_file_but_it_never_names_the_admin_group(tmp_path: Path) -> None:
    config = _user_config(tmp_path, ATTACK)
    settings = load_settings(config, trust=ROOT)
    assert settings.container.allowed_mount_roots == ["/"]
    assert not settings.require_trusted_files
    assert settings.effective_admin_group() is None


def test_a_single_user_install_keeps_ds01_config_without_admin_powers(tmp_path: Path) -> None:
    config = _user_config(tmp_path, ATTACK)
    settings = load_settings(config, trust=ALICE_LAPTOP)
    assert settings.container.allowed_mount_roots == ["/"]  # her own machine, her choice
    assert not settings.trusted and not settings.require_trusted_files
    assert settings.admin_group == "ds01t-students"
    assert settings.effective_admin_group() is None  # but not from a file she could write


def test_a_trusted_config_governs_and_requires_trusted_files(tmp_path: Path) -> None:
    config = _write(_tree(tmp_path) / "ds01.yaml", "admin_group: ds01-admin\n")
    settings = load_settings(config, trust=ALICE)
    assert settings.trusted and settings.require_trusted_files
    assert settings.effective_admin_group() == "ds01-admin"


def test_the_defaults_are_trusted_and_still_require_trusted_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No file at the default path on a system install: the defaults (admin group
    # included), and the default limits file is still checked when it is read.
    from ds01.config import loader

    absent = tmp_path / "absent" / "ds01.yaml"
    monkeypatch.setattr(loader, "DEFAULT_CONFIG_PATH", absent)
    monkeypatch.setattr(loader, "config_path", lambda: absent)
    settings = load_settings(trust=ALICE)
    assert settings.trusted and settings.require_trusted_files
    assert settings.effective_admin_group() == "ds01-admin"


@pytest.mark.parametrize("key", ["trusted", "require_trusted_files", "state_dir_fallback"])
def test_internal_flags_cannot_be_set_from_a_file(tmp_path: Path, key: str) -> None:
    config = _write(_tree(tmp_path) / "ds01.yaml", f"admin_group: x\n{key}: true\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, trust=ROOT)
    assert f"{config}:2: {key}: unknown key" in err.value.message


# ----------------------------------------------------------------------- admin status


@pytest.fixture
def nobody(monkeypatch: pytest.MonkeyPatch) -> int:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:  # pragma: no cover
        pytest.skip("no 'nobody' account")
    monkeypatch.setattr(os, "getuid", lambda: entry.pw_uid)
    return entry.pw_uid


def _group_of(uid: int) -> str:
    import grp
    import pwd

    return grp.getgrgid(pwd.getpwuid(uid).pw_gid).gr_name


def test_admin_status_never_comes_from_an_untrusted_file(nobody: int) -> None:
    group = _group_of(nobody)
    untrusted = Settings(admin_group=group).model_copy(update={"trusted": False})
    ctx = AppContext(settings=untrusted, environ={})
    assert ctx.actor.uid == nobody and not ctx.actor.is_admin
    trusted = Settings(admin_group=group)
    assert AppContext(settings=trusted, environ={}).actor.is_admin


# ----------------------------------------------------------------------- referenced files


def _governing(tmp_path: Path, **files: str) -> tuple[Settings, dict[str, Path]]:
    top = _tree(tmp_path)
    paths = {name: _write(top / name, text) for name, text in files.items()}
    settings = Settings(
        limits=top / "limits.yaml", gpu={"inventory": f"file:{top / 'gpus.json'}"}
    ).model_copy(update={"require_trusted_files": True})
    return settings, paths


def _hand_to_user(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, USER_UID, -1)
    else:  # pragma: no cover
        path.chmod(0o666)


LIMITS = "default_group: s\ngroups:\n  s:\n    members_file: members.txt\n"


def test_the_limits_file_must_be_trusted_when_required(tmp_path: Path) -> None:
    settings, paths = _governing(tmp_path, **{"limits.yaml": LIMITS, "members.txt": "bob\n"})
    assert AppContext(settings=settings).policy.path == paths["limits.yaml"]
    _hand_to_user(paths["limits.yaml"])
    with pytest.raises(ConfigError) as err:
        _ = AppContext(settings=settings).policy
    assert "resource-limits file" in err.value.message and "'limits'" in (err.value.hint or "")
    # Not required (root, or a single-user install): read as before.
    relaxed = settings.model_copy(update={"require_trusted_files": False})
    assert AppContext(settings=relaxed).policy.path == paths["limits.yaml"]


def test_members_files_must_be_trusted_when_required(tmp_path: Path) -> None:
    settings, paths = _governing(tmp_path, **{"limits.yaml": LIMITS, "members.txt": "bob\n"})
    _hand_to_user(paths["members.txt"])
    with pytest.raises(ConfigError) as err:
        _ = AppContext(settings=settings).policy
    assert "members file" in err.value.message and str(paths["members.txt"]) in err.value.message


def test_the_inventory_file_must_be_trusted_when_required(tmp_path: Path) -> None:
    settings, paths = _governing(tmp_path, **{"gpus.json": '{"gpus": []}'})
    assert AppContext(settings=settings).inventory is not None
    _hand_to_user(paths["gpus.json"])
    with pytest.raises(ConfigError) as err:
        _ = AppContext(settings=settings).inventory
    assert "GPU inventory file" in err.value.message


def test_require_trusted_returns_the_real_path(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    target = _write(top / "real.yaml", "x: 1\n")
    (top / "link.yaml").symlink_to(target)
    assert require_trusted(top / "link.yaml", what="x", setting="limits") == target
