"""The composition root: builds each adapter once, on first use, from the settings.

Commands create one :class:`AppContext`; services receive it and ask it for the parts
they need. Nothing is built until asked for, so ``ds01 container list`` never imports
pydantic, NVML or the policy loader. Tests pass ready-made parts to the constructor
(a Docker engine pointed at the test daemon, or the in-memory engine
:class:`ds01.adapters.memory_engine.MemoryEngine`; a file inventory, a fixed clock).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ds01.adapters.clock import SystemClock
from ds01.adapters.docker_build import DockerBuildEngine
from ds01.adapters.docker_engine import DockerEngine
from ds01.adapters.identity import SystemAccounts
from ds01.adapters.mounted import ProcMountProbe
from ds01.domain.actor import Actor
from ds01.errors import EngineError

if TYPE_CHECKING:
    from ds01.adapters.event_log import EventLog
    from ds01.adapters.state_db import StateDB
    from ds01.config.limits import PolicyFile
    from ds01.config.settings import Settings
    from ds01.domain.catalog import Catalog
    from ds01.ports import Accounts, BuildEngine, Clock, ContainerEngine, GpuInventory, MountProbe

__all__ = ["AppContext"]


class AppContext:
    """Lazily built adapters and the acting user, for one command."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        actor: Actor | None = None,
        engine: ContainerEngine | None = None,
        inventory: GpuInventory | None = None,
        builder: BuildEngine | None = None,
        mount_probe: MountProbe | None = None,
        accounts: Accounts | None = None,
        clock: Clock | None = None,
        act_as: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._actor = actor
        self._engine = engine
        self._inventory = inventory
        self._builder = builder
        self._mount_probe = mount_probe
        self._accounts = accounts
        self.clock: Clock = clock or SystemClock()
        self._act_as = act_as
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.warnings: list[str] = []
        #: The administrator's name when one acts for another user with ``--as``.
        self.acting_admin: str | None = None

    # -- configuration ----------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ds01.config.loader import load_settings

            self._settings = load_settings()
        return self._settings

    # -- identity ---------------------------------------------------------------------

    @property
    def actor(self) -> Actor:
        """The acting user, with admin status resolved from the configuration."""
        if self._actor is None:
            from ds01.adapters.identity import resolve_actor

            # Only a root-controlled configuration may name the admin group
            # (ds01.config.trust): never a file the caller could have written.
            admin_group = self.settings.effective_admin_group()
            self._actor = resolve_actor(
                act_as=self._act_as, admin_group=admin_group, environ=self.environ
            )
            if self._act_as is not None:
                caller = resolve_actor(admin_group=admin_group, environ=self.environ)
                self.acting_admin = caller.name
        return self._actor

    def own_actor(self) -> Actor:
        """The acting user without loading the configuration (admin status not resolved).

        Used by read-only commands about the caller's own containers, which must answer
        fast (``container list`` is typed all day): the admin check needs the admin group
        from ``ds01.yaml``, and validating that file costs more than the whole listing.
        """
        if self._actor is not None or self._act_as is not None:
            return self.actor
        from ds01.adapters.identity import resolve_actor

        return resolve_actor(admin_group=None, environ=self.environ, with_groups=False)

    # -- adapters ---------------------------------------------------------------------

    @property
    def engine(self) -> ContainerEngine:
        if self._engine is None:
            self._engine = DockerEngine()
        return self._engine

    @property
    def accounts(self) -> Accounts:
        """Other users' accounts (a grant's owner, an owner's limits): the system's."""
        if self._accounts is None:
            self._accounts = SystemAccounts()
        return self._accounts

    @property
    def mount_probe(self) -> MountProbe:
        """How mounts are verified after a start: this host's /proc unless given."""
        if self._mount_probe is None:
            self._mount_probe = ProcMountProbe()
        return self._mount_probe

    @property
    def builder(self) -> BuildEngine:
        """Image builds: the Docker engine's builder. Another engine (the in-memory one
        in unit tests) comes with its own builder or none."""
        if self._builder is None:
            if not isinstance(self.engine, DockerEngine):
                raise EngineError(
                    f"This engine ({type(self.engine).__name__}) cannot build images.",
                    hint="Give the context a BuildEngine, or build on a Docker engine.",
                )
            self._builder = DockerBuildEngine(self.engine)
        return self._builder

    @property
    def inventory(self) -> GpuInventory:
        if self._inventory is None:
            from ds01.adapters.gpu import open_inventory

            spec = self.settings.gpu.inventory
            if spec.startswith("file:") and self.settings.require_trusted_files:
                from ds01.config.trust import require_trusted

                real = require_trusted(
                    Path(spec[5:]), what="GPU inventory file", setting="gpu.inventory"
                )
                spec = f"file:{real}"
            self._inventory = open_inventory(spec)
        return self._inventory

    @cached_property
    def state_db(self) -> StateDB:
        from ds01.adapters.state_db import StateDB

        # The admin group decides whose files count as an administrator's (exemptions,
        # events recorded for others): only from a root-controlled configuration.
        return StateDB(
            Path(self.settings.state_dir), admin_group=self.settings.effective_admin_group()
        )

    @cached_property
    def events(self) -> EventLog:
        from ds01.adapters.event_log import EventLog

        return EventLog(self.state_db)

    @cached_property
    def policy(self) -> PolicyFile:
        """The resource-limits file, read once per command (so edits apply at once)."""
        from ds01.config.limits import DEFAULT_POLICY_PATH, load_policy

        path = self.settings.limits
        check: Callable[[Path], Path] | None = None
        read = path
        if self.settings.require_trusted_files:
            # The policy and its members files decide everybody's limits and groups:
            # read them only from root-controlled files (ds01.config.trust).
            from ds01.config.trust import require_trusted

            read = require_trusted(path, what="resource-limits file", setting="limits")

            def check(members: Path) -> Path:
                return require_trusted(
                    members, what="members file", setting=f"members_file in {path}"
                )

        policy = load_policy(
            read,
            referenced_by="'limits' in the DS01 configuration",
            missing_ok=path == DEFAULT_POLICY_PATH,
            trust_check=check,
        )
        self.warnings.extend(policy.warnings)
        return policy

    @cached_property
    def catalog(self) -> Catalog:
        """AIME's catalog, or the built-in Docker Hub mapping (with a warning) without it."""
        from ds01.domain.catalog import fallback_catalog, parse_catalog
        from ds01.errors import ConfigError

        path = Path(self.settings.catalog)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            catalog = fallback_catalog(missing_path=str(path))
            self.warnings.extend(catalog.warnings)
            return catalog
        except OSError as exc:
            raise ConfigError(
                f"Cannot read the catalog {path}: {exc.strerror}.",
                hint="Check 'catalog' in the DS01 configuration and the file's permissions.",
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"The catalog {path} is not UTF-8 text (byte {exc.start}).",
                hint="Point 'catalog' at AIME's ml_images.repo, or fix the file's encoding.",
            ) from exc
        # Parse warnings (duplicate lines) are for admins: `catalog list` shows them.
        return parse_catalog(text, str(path))
