"""DS01's keep-alive program: a static executable that waits for a signal, forever.

A DS01 container's main process only keeps it alive (sessions are ``docker exec``
processes beside it). It must not be a program from the container's own filesystem:
that is the user's (a custom image, or anything they changed with ``sudo`` in an earlier
session: ``/usr/bin/sleep``, ``/etc/ld.so.preload``), and it runs the moment the
container starts, before DS01 can check what Docker mounted. So the container runs this
program instead, bind-mounted read-only from DS01's own installation, under Docker's
init (``--init``, itself a static binary from the host). It is a bare ELF executable:
no interpreter and no library is loaded, so nothing in the container is read or run.

The bytes are built here and shipped in ``ds01/data/keepalive-<machine>`` (a unit test
checks that the shipped files are exactly these bytes). The code is a loop around the
one system call that sleeps until a signal: ``pause`` on x86-64, ``ppoll`` with no
descriptors on AArch64 (which has no ``pause``). ``docker stop``'s SIGTERM is forwarded
by the init and, with no handler installed, ends it.
"""

from __future__ import annotations

import struct

__all__ = ["MACHINES", "keepalive_elf"]

_BASE = 0x400000
_EHDR = 64
_PHDR = 56

# machine -> (ELF e_machine, code)
_CODE: dict[str, tuple[int, bytes]] = {
    # loop: mov eax, 34 (pause); syscall; jmp loop
    "x86_64": (62, bytes.fromhex("b822000000 0f05 ebf7")),
    # loop: mov x0..x3, #0; mov x8, #73 (ppoll); svc #0; b loop
    "aarch64": (
        183,
        struct.pack(
            "<7I",
            0xD2800000,
            0xD2800001,
            0xD2800002,
            0xD2800003,
            0xD2800928,
            0xD4000001,
            0x17FFFFFA,
        ),
    ),
}

#: ``platform.machine()`` values a keep-alive exists for.
MACHINES: tuple[str, ...] = tuple(_CODE)


def keepalive_elf(machine: str) -> bytes:
    """The static ELF64 little-endian executable for ``machine`` (``KeyError`` if none)."""
    e_machine, code = _CODE[machine]
    size = _EHDR + _PHDR + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, v1, SysV
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        e_machine,
        1,  # EV_CURRENT
        _BASE + _EHDR + _PHDR,  # entry: the code right after the headers
        _EHDR,  # program headers follow the ELF header
        0,  # no section headers
        0,
        _EHDR,
        _PHDR,
        1,
        0,
        0,
        0,
    )
    program = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # read + execute
        0,
        _BASE,
        _BASE,
        size,
        size,
        0x1000,
    )
    return header + program + code
