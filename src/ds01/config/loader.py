"""Reading ``ds01.yaml`` into :class:`Settings`, believing it only as far as it is trusted.

Which files may govern other users is decided by :mod:`ds01.config.trust`: on a machine
with a system installation a non-root caller may only use a root-controlled file (exit 2
otherwise), and anywhere ``admin_group`` counts only from such a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ds01.adapters.engine_rlimits import UNLIMITED, engine_ceilings
from ds01.config.settings import DEFAULT_CONFIG_PATH, INTERNAL_KEYS, Settings, config_path
from ds01.config.trust import TrustContext, check_path, current_trust, untrusted_error
from ds01.config.yaml_source import (
    LineMap,
    Problem,
    dotted,
    line_for,
    load_yaml_with_lines,
    problems_error,
    validate_located,
)
from ds01.errors import ConfigError

__all__ = ["load_settings", "user_state_dir"]

_PATH_KEYS = ("catalog", "limits", "state_dir")


def user_state_dir() -> Path:
    """Per-user state for a single user on a laptop (XDG base directory spec)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ds01"


def _writable_or_creatable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _engine_problems(settings: Settings, line_map: LineMap, path: Path) -> list[Problem]:
    """ulimits in the file that the local Docker engine cannot set (see engine_rlimits).

    Docker accepts them (``memlock: -1`` is its "unlimited"), but an engine without
    CAP_SYS_RESOURCE fails every container start that asks for more than its own hard
    limit. Checked only for keys the file names, and only when the engine is local.
    """
    named = [k for k in settings.container.ulimits if ("container", "ulimits", k) in line_map]
    if not named:
        return []
    ceilings = engine_ceilings(os.environ) or {}
    problems: list[Problem] = []
    for name in named:
        want, cap = settings.container.ulimits[name], ceilings.get(name, UNLIMITED)
        if cap == UNLIMITED or (want != UNLIMITED and want <= cap):
            continue
        shown = "-1 (unlimited)" if want == UNLIMITED else str(want)
        why = (
            "the kernel's fs.nr_open or the engine's own limit"
            if name == "nofile"
            else "the engine lacks CAP_SYS_RESOURCE (rootless or nested Docker), so it "
            "cannot go above its own hard limit"
        )
        key = ("container", "ulimits", name)
        message = f"{shown} is more than the Docker engine on this host can set ({cap}): {why}"
        problems.append(Problem(str(path), line_for(line_map, key), dotted(key), message))
    return problems


def _read(path: Path) -> Settings:
    data, line_map = load_yaml_with_lines(path, what="DS01 configuration")
    if isinstance(data, dict):
        internal = [k for k in INTERNAL_KEYS if k in data]
        if internal:
            problems = [
                Problem(str(path), line_for(line_map, (k,)), dotted((k,)), "unknown key")
                for k in internal
            ]
            raise problems_error(problems, hint="Remove it: it is not a configuration key.")
    settings = validate_located(
        Settings, {} if data is None else data, path=path, line_map=line_map
    )
    problems = _engine_problems(settings, line_map, path)
    if problems:
        raise problems_error(
            problems,
            hint="Give at most the value shown, or remove the key; or give dockerd that "
            "limit (e.g. LimitMEMLOCK=infinity in its systemd unit) and CAP_SYS_RESOURCE.",
        )
    return settings


def load_settings(path: Path | None = None, *, trust: TrustContext | None = None) -> Settings:
    """Load and validate the configuration; built-in defaults when there is no file.

    ``$DS01_CONFIG`` pointing at a missing file is an error (a typo would otherwise run
    on defaults silently); the default path being absent is normal. ``trust`` (who is
    asking, on what machine) defaults to this process's; tests inject it.
    """
    trust = trust or current_trust()
    explicit = path is not None or "DS01_CONFIG" in os.environ
    path = path or config_path()
    try:
        present = path.exists()
    except OSError as exc:  # e.g. a parent directory the user may not enter
        raise ConfigError(
            f"Cannot read the configuration file {path}: {exc.strerror}.",
            hint="Ask an admin to make it readable by DS01 users (mode 644).",
        ) from exc
    trusted = True
    if present:
        verdict = check_path(path)
        trusted = verdict.trusted
        if trust.enforced and verdict.reason is not None:
            setting = "DS01_CONFIG" if "DS01_CONFIG" in os.environ else "the configuration"
            raise untrusted_error(
                path,
                verdict.reason,
                what="DS01 configuration",
                setting=setting,
                marker=trust.system_install,
            )
        # Read the resolved path the check vouched for: its directories are root's, so
        # nothing can be swapped in between (the given path may go through a link).
        settings = _read(verdict.real if trust.enforced else path)
        base = path.parent
        updates: dict[str, Path] = {}
        for key in _PATH_KEYS:
            value: Path = getattr(settings, key)
            if not value.is_absolute():
                updates[key] = (base / value).resolve()
        certs = [
            c if c.is_absolute() else (base / c).resolve() for c in settings.build.ca_certificates
        ]
        build = settings.build.model_copy(update={"ca_certificates": certs})
        gpu = settings.gpu
        if gpu.inventory.startswith("file:") and not Path(gpu.inventory[5:]).is_absolute():
            inventory = f"file:{(base / gpu.inventory[5:]).resolve()}"
            gpu = gpu.model_copy(update={"inventory": inventory})
        settings = settings.model_copy(update={**updates, "build": build, "gpu": gpu})
        explicit_state = True
    elif explicit and path != DEFAULT_CONFIG_PATH:
        raise ConfigError(
            f"The configuration file {path} does not exist.",
            hint="Fix DS01_CONFIG, or unset it to use /etc/ds01/ds01.yaml or the defaults.",
        )
    else:
        settings = Settings()
        explicit_state = False
    if not explicit_state and not _writable_or_creatable(settings.state_dir):
        # A single user on a laptop cannot write /var/lib/ds01: keep their state at home.
        settings = settings.model_copy(
            update={"state_dir": user_state_dir(), "state_dir_fallback": True}
        )
    # An untrusted file never decides who is an administrator; where the rule is
    # enforced, the files it names must pass the same check when they are read.
    return settings.model_copy(update={"trusted": trusted, "require_trusted_files": trust.enforced})
