"""The allocation lock under attack by a real DS01 user (issue 10, finding 4).

Before: ``locks/`` was group-writable and not sticky; deleting the lock file during
concurrent creates gave one GPU to two users in 1 of 20 rounds. Now the directory and the
file are root's: a user's delete, rename or replace fails, so every create of a round
serialises on the same inode and exactly one gets the single GPU.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ds01.domain.actor import Actor
from tests.integration.conftest import Ds01Env

ROUNDS = 3

# dave, another DS01 user, tries to delete or replace the lock until told to stop
# (stdin closes); prints how many attempts the kernel allowed.
_ATTACK = r"""
import os, sys, threading
lock = sys.argv[1]
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
won = tries = 0
while not done.is_set():
    for attack in (
        lambda: os.unlink(lock),
        lambda: os.rename(lock, lock + ".x"),
        lambda: os.symlink("/tmp", lock + ".new") or os.rename(lock + ".new", lock),
    ):
        tries += 1
        try:
            attack()
            won += 1
        except OSError:
            pass
print(won, tries)
"""


def test_concurrent_creates_with_a_user_deleting_the_lock_never_double_book(
    ds01_env: Ds01Env, linux_users: dict[str, Actor], engine: Any
) -> None:
    users = [linux_users[n] for n in ("ds01t-alice", "ds01t-bob", "ds01t-carol")]
    dave = linux_users["ds01t-dave"]
    lock = ds01_env.root / "state" / "locks" / "allocation.lock"
    assert lock.stat().st_uid == 0 and lock.stat().st_mode & 0o022 == 0
    inode = lock.stat().st_ino
    for n in range(ROUNDS):
        attacker = subprocess.Popen(
            ["runuser", "-u", dave.name, "--", sys.executable, "-I", "-c", _ATTACK, str(lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        with ThreadPoolExecutor(len(users)) as pool:
            codes = list(
                pool.map(
                    lambda u, name=f"lk{n}": (
                        ds01_env.run_cli(u.name, "container", "create", name, "pytorch").returncode
                    ),
                    users,
                )
            )
        won, tries = map(int, attacker.communicate("")[0].split())
        assert won == 0 and tries > 0
        assert sorted(codes) == [0, 4, 4], codes
        holders = [
            c
            for c in engine.list_containers([])
            if c.decoded is not None and c.decoded.gpu_uuids and c.owner in {u.name for u in users}
        ]
        assert len(holders) == 1, [h.tag for h in holders]
        winner = next(u for u, code in zip(users, codes, strict=True) if code == 0)
        assert ds01_env.run_cli(winner.name, "container", "remove", f"lk{n}", "-f").returncode == 0
    assert lock.stat().st_ino == inode
