"""A DS01 host in memory: the services on :class:`MemoryEngine`, a file inventory, a
clock that moves when told, accounts from a table (no Linux users are made).

Each test gets a fresh :class:`Lab`: a state directory laid out by the installer's own
function, three users with homes, a policy file and the catalog images seeded into the
engine under AIME's real names. The services run exactly as under the CLI; only the
engine, the mount probe, the accounts and the clock are the in-memory ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ds01.adapters.clock import FixedClock
from ds01.adapters.memory_accounts import MemoryAccounts
from ds01.adapters.memory_engine import MemoryEngine, MemoryMountProbe
from ds01.adapters.state_setup import install_state
from ds01.config.loader import load_settings
from ds01.domain.actor import Actor
from ds01.domain.engine_types import ContainerFile
from ds01.services.context import AppContext

#: The catalog images the hermetic base is tagged as in CI (scripts/hermetic-base.sh).
CATALOG_IMAGES = (
    "aimehub/pytorch-2.5.1-aime-cuda12.1.1",
    "aimehub/pytorch-2.5.1-aime-cuda11.8.0",
    "aimehub/pytorch-2.8.0-aime-cuda12.6.3",
    "aimehub/pytorch-2.8.0-cuda12.6.3",
    "aimehub/pytorch-2.7.1-cuda11.8.0",
    "aimehub/pytorch-2.9.1-cuda12.8.1",
    "aimehub/tensorflow-2.16.1-cuda12.3",
)

H200 = "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d"
ONE_H200: dict[str, Any] = {
    "gpus": [
        {
            "index": 0,
            "uuid": H200,
            "name": "NVIDIA H200",
            "memory_mib": 143771,
            "compute_capability": "9.0",
        }
    ]
}

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ADMIN_GROUP = "ds01u-admins"
USERS = ("alice", "bob", "carol")
BASE_UID = 4101

_ETC = {
    "etc": None,
    "etc/passwd": ContainerFile(b"root:x:0:0:root:/root:/bin/bash\n", 0o100644, 0, 0),
    "etc/group": ContainerFile(b"root:x:0:\n", 0o100644, 0, 0),
    "etc/shells": ContainerFile(b"/bin/sh\n/bin/bash\n", 0o100644, 0, 0),
}


@dataclass
class Lab:
    root: Path
    engine: MemoryEngine
    clock: FixedClock
    accounts: MemoryAccounts
    config_path: Path
    limits_path: Path
    inventory_path: Path
    users: dict[str, Actor] = field(default_factory=dict)

    def ctx(self, actor: Actor) -> AppContext:
        return AppContext(
            settings=load_settings(self.config_path),
            actor=actor,
            engine=self.engine,
            clock=self.clock,
            accounts=self.accounts,
            mount_probe=MemoryMountProbe(self.engine),
            environ={},
        )

    def write_limits(self, policy: dict[str, Any]) -> None:
        self.limits_path.write_text(yaml.safe_dump(policy))

    def write_inventory(self, inventory: dict[str, Any]) -> None:
        self.inventory_path.write_text(json.dumps(inventory))


DEFAULT_LIMITS: dict[str, Any] = {
    "default_group": "students",
    "defaults": {"max_containers": 3, "max_gpu_equivalents": 1},
    "groups": {"students": {"members": list(USERS)}},
}


@pytest.fixture
def lab(aime_dir: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        # The users' homes and request files must belong to their uids, as on a server.
        pytest.skip("the in-memory host gives files to several uids: run as root (CI does)")
    made = new_lab(aime_dir)
    try:
        yield made
    finally:
        shutil.rmtree(made.root, ignore_errors=True)


def new_lab(aime_dir: Path) -> Lab:
    """A fresh host in a new directory (the caller removes ``lab.root``)."""
    # Not under pytest's tmp dir (0700 root): the users walk their paths with their rights.
    root = Path(tempfile.mkdtemp(prefix="ds01-lab-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "state"
    install_state(state, group=None, admin_group=ADMIN_GROUP)
    limits = root / "resource-limits.yaml"
    inventory = root / "gpus.json"
    config = root / "ds01.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": str(aime_dir / "ml_images.v2.repo"),
                "limits": str(limits),
                "state_dir": str(state),
                "admin_group": ADMIN_GROUP,
                "gpu": {"inventory": f"file:{inventory}", "runtime": "none"},
            }
        )
    )
    clock = FixedClock(START)
    engine = MemoryEngine(clock)
    for image in CATALOG_IMAGES:
        engine.add_image(f"{image}:latest", files=_ETC)
    accounts = MemoryAccounts()
    lab = Lab(root, engine, clock, accounts, config, limits, inventory)
    for n, name in enumerate(USERS):
        home = root / "home" / name
        home.mkdir(parents=True)
        uid = BASE_UID + n
        os.chown(home, uid, uid)
        actor = Actor(uid=uid, gid=uid, name=name, home=str(home), groups=(name,))
        accounts.add(actor)
        lab.users[name] = actor
    lab.write_limits(DEFAULT_LIMITS)
    lab.write_inventory(ONE_H200)
    return lab
