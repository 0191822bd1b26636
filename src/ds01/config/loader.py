"""Reading ``ds01.yaml`` into :class:`Settings`."""

from __future__ import annotations

import os
from pathlib import Path

from ds01.config.settings import DEFAULT_CONFIG_PATH, Settings, config_path
from ds01.config.yaml_source import load_model
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


def load_settings(path: Path | None = None) -> Settings:
    """Load and validate the configuration; built-in defaults when there is no file.

    ``$DS01_CONFIG`` pointing at a missing file is an error (a typo would otherwise run
    on defaults silently); the default path being absent is normal.
    """
    explicit = path is not None or "DS01_CONFIG" in os.environ
    path = path or config_path()
    try:
        present = path.exists()
    except OSError as exc:  # e.g. a parent directory the user may not enter
        raise ConfigError(
            f"Cannot read the configuration file {path}: {exc.strerror}.",
            hint="Ask an admin to make it readable by DS01 users (mode 644).",
        ) from exc
    if present:
        settings = load_model(path, Settings, what="DS01 configuration")
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
    return settings
