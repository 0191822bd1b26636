"""User accounts from a table, for tests (the :class:`ds01.ports.Accounts` port).

Services look up other users (a queue grant's owner, the limits of a container's owner)
through :attr:`ds01.services.context.AppContext.accounts`; with this table a test can
have several users without creating Linux accounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ds01.adapters.identity import unknown_user
from ds01.domain.actor import Actor

__all__ = ["MemoryAccounts"]


class MemoryAccounts:
    """Accounts given as :class:`Actor` values; ``is_admin`` follows ``admin_group``."""

    def __init__(self, actors: Iterable[Actor] = ()) -> None:
        self._by_name = {a.name: a for a in actors}

    def add(self, actor: Actor) -> None:
        self._by_name[actor.name] = actor

    def actor(
        self, user: str, *, admin_group: str | None = None, with_groups: bool = True
    ) -> Actor:
        found = self._find(user)
        if found is None:
            raise unknown_user(user)
        groups = found.groups if with_groups else ()
        # As the system lookup: root, or a member of the admin group (groups looked up).
        is_admin = found.uid == 0 or (admin_group is not None and admin_group in groups)
        return replace(found, groups=groups, is_admin=is_admin)

    def uid(self, user: str) -> int | None:
        found = self._by_name.get(user)
        return found.uid if found else None

    def _find(self, user: str) -> Actor | None:
        if user.isdigit():
            return next((a for a in self._by_name.values() if a.uid == int(user)), None)
        return self._by_name.get(user)
