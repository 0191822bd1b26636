"""Who is asking: the identity every service checks before it acts."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Actor"]


@dataclass(frozen=True)
class Actor:
    """The Linux user on whose behalf a service acts.

    ``name`` is the login name exactly as the system knows it (LDAP names such as
    ``a.b@domain`` included); it is what labels record. ``groups`` are Linux group names,
    used for policy membership (``unix_group``) and for the admin check.
    """

    uid: int
    gid: int
    name: str
    home: str
    groups: tuple[str, ...] = field(default_factory=tuple)
    is_admin: bool = False

    def owns(self, owner_name: str | None, owner_uid: int | None) -> bool:
        """True when a container labelled with this owner belongs to this actor."""
        if owner_name is not None:
            return owner_name == self.name
        return owner_uid is not None and owner_uid == self.uid

    def may_manage(self, owner_name: str | None, owner_uid: int | None) -> bool:
        """Owners manage their own containers; admins manage everyone's."""
        return self.is_admin or self.owns(owner_name, owner_uid)
