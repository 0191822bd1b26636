"""The small domain modules, with literal expected values: who may manage a container
(actor), Docker states and what a listed container reports (containers), and the account
files a container gets instead of a committed image (user_setup)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ds01.domain.actor import Actor
from ds01.domain.containers import (
    KEEPALIVE_COMMAND,
    MAIN_COMMANDS,
    SLEEP_COMMAND,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    Limits,
)
from ds01.domain.labels import ContainerLabels
from ds01.domain.user_setup import (
    ContainerUser,
    account_name,
    bashrc,
    merge_group,
    merge_passwd,
    merge_shadow,
    profile,
    sudoers,
)

ALICE = Actor(uid=1000, gid=1000, name="alice", home="/home/alice")
ADMIN = Actor(uid=0, gid=0, name="root", home="/root", groups=("ds01-admin",), is_admin=True)

# --------------------------------------------------------------------------- actor


@pytest.mark.parametrize(
    ("owner_name", "owner_uid", "owns"),
    [
        ("alice", None, True),
        ("alice", 1001, True),  # the name label decides when present
        ("bob", 1000, False),  # ...even against a matching uid
        (None, 1000, True),  # AIME containers: only the uid in the tag
        (None, 1001, False),
        (None, None, False),  # unknown owner: nobody's
        ("Alice", None, False),  # names compare exactly
    ],
)
def test_ownership(owner_name: str | None, owner_uid: int | None, owns: bool) -> None:
    assert ALICE.owns(owner_name, owner_uid) is owns
    assert ALICE.may_manage(owner_name, owner_uid) is owns
    assert ADMIN.may_manage(owner_name, owner_uid) is True


def test_actor_defaults() -> None:
    assert (ALICE.groups, ALICE.is_admin) == ((), False)


# --------------------------------------------------------------------------- containers


@pytest.mark.parametrize(
    ("text", "state", "active"),
    [
        ("running", ContainerState.RUNNING, True),
        ("RUNNING", ContainerState.RUNNING, True),
        ("paused", ContainerState.PAUSED, True),
        ("restarting", ContainerState.RESTARTING, True),
        ("created", ContainerState.CREATED, False),
        ("removing", ContainerState.REMOVING, False),
        ("exited", ContainerState.EXITED, False),
        ("dead", ContainerState.DEAD, False),
        ("something-new", ContainerState.DEAD, False),  # unknown: treated as gone
    ],
)
def test_container_states(text: str, state: ContainerState, active: bool) -> None:
    parsed = ContainerState.parse(text)
    assert parsed is state
    assert parsed.is_active is active


def test_main_commands_and_spec_defaults() -> None:
    assert KEEPALIVE_COMMAND == ("/sbin/ds01-keepalive",)
    assert SLEEP_COMMAND == ("sleep", "infinity")
    assert MAIN_COMMANDS == (("/sbin/ds01-keepalive",), ("sleep", "infinity"))
    spec = ContainerSpec(tag="t", image="i", labels={}, user="1000:1000")
    assert (spec.command, spec.entrypoint, spec.workdir, spec.network) == (
        ("sleep", "infinity"),
        None,
        "/workspace",
        "bridge",
    )
    assert (spec.mounts, spec.device_ids, spec.hostname, dict(spec.ulimits)) == ((), (), None, {})
    assert spec.limits == Limits(None, None, None, None, None, None)


def _info(tag: str, labels: dict[str, str]) -> ContainerInfo:
    return ContainerInfo(
        "id", tag, "img", ContainerState.RUNNING, "Up", labels, datetime(2025, 1, 1, tzinfo=UTC)
    )


def test_a_ds01_container_reports_its_labels() -> None:
    labels = ContainerLabels(name="proj", user="alice", framework="custom", uid=1000).encode()
    info = _info("other._.1234", labels)
    assert (info.display_name, info.owner, info.owner_uid) == ("proj", "alice", 1000)
    assert info.decoded is info.decoded  # decoded once, then cached


def test_a_container_without_labels_falls_back_to_its_tag() -> None:
    info = _info("proj._.1234", {})
    assert (info.display_name, info.owner, info.owner_uid) == ("proj", None, 1234)
    labels = ContainerLabels(name="", user="bob", framework="custom").encode()
    info = _info("legacy._.77", labels)
    assert (info.display_name, info.owner, info.owner_uid) == ("legacy", "bob", 77)


# --------------------------------------------------------------------------- user_setup

USER = ContainerUser("alice", 1000, 1000, "alice")


def test_container_user_home_and_shell() -> None:
    assert (USER.home, USER.shell) == ("/home/alice", "/bin/bash")


def test_passwd_has_exactly_one_entry_for_the_user() -> None:
    text = (
        "root:x:0:0:root:/root:/bin/bash\n"
        "ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n"  # same uid: replaced
        "\n"
        "alice:x:5:5::/:/bin/sh\n"  # same name: replaced
        "broken-line\n"  # too few fields: kept as it is
    )
    assert merge_passwd(text, USER) == (
        "root:x:0:0:root:/root:/bin/bash\n"
        "broken-line\n"
        "alice:x:1000:1000:DS01 user:/home/alice:/bin/bash\n"
    )


def test_group_keeps_an_existing_gid_and_replaces_a_same_named_group() -> None:
    assert merge_group("root:x:0:\nusers:x:1000:\n", USER) == "root:x:0:\nusers:x:1000:\n"
    assert merge_group("root:x:0:\nalice:x:7:\n\n", USER) == "root:x:0:\nalice:x:1000:\n"
    assert merge_group("x\n", USER) == "x\nalice:x:1000:\n"


def test_shadow_entry_is_locked_for_password_login() -> None:
    assert merge_shadow("root:*:1::::::\nalice:!:1::::::\n", USER) == (
        "root:*:1::::::\nalice:*:19000:0:99999:7:::\n"
    )


def test_shell_files_and_sudoers() -> None:
    assert bashrc("a b$(x)@c.d-e_f") == (
        "# Written by DS01 when the container was created.\n"
        "[ -f /etc/skel/.bashrc ] && . /etc/skel/.bashrc\n"
        'export PATH="$HOME/.local/bin:$PATH"\n'
        "export PS1='[abx@c.d-e_f] \\u@\\h:\\w\\$ '\n"
        "cd /workspace 2>/dev/null || true\n"
    )
    assert profile() == (
        "# Written by DS01 when the container was created.\n"
        'if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi\n'
        'export PATH="$HOME/.local/bin:$PATH"\n'
    )
    assert sudoers(USER) == "alice ALL=(ALL) NOPASSWD: ALL\n"


@pytest.mark.parametrize(
    ("login", "account"),
    [
        ("alice", "alice"),
        ("a.b@domain", "a_b"),
        ("a..b", "a_b"),  # a run of other characters is one '_'
        ("a__b", "a_b"),
        ("-a-", "a"),  # stripped of '_' and '-' at both ends
        ("228755@students.example", "u_228755"),
        ("Jane.Doe@Uni.EDU", "jane_doe"),
        ("root", "u_root"),
        ("sshd", "u_sshd"),
        ("@", "u"),  # nothing left: 'u'
        ("_svc", "svc"),
        ("x" * 32, "x" * 32),  # 32 characters: kept
        ("x" * 33, "x" * 24 + "_11ba55a"),  # 33: first 24 + '_' + sha256(login)[:7]
    ],
)
def test_account_names_at_their_boundaries(login: str, account: str) -> None:
    assert account_name(login) == account
