"""Build contexts under a swapping adversary (issue 10, finding 2, "image build contexts").

DS01 packs the build context itself, through descriptors opened with ``O_NOFOLLOW`` from
``/`` down (:func:`ds01.adapters.docker_build.write_context`), and Docker only receives
the tar: it never resolves a host path of a build. While the context directory flips
between the real directory and a link to another directory as fast as it can, every
attempt must either be refused (exit 2) or pack the real directory's files, never the
link target's.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

from ds01.adapters.docker_build import write_context
from ds01.errors import UsageError

SWAPPER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
while True:
    libc.renameat2(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
"""


def test_a_context_swapped_for_a_link_never_packs_the_link_target(tmp_path: Path) -> None:
    ctx, secret = tmp_path / "ctx", tmp_path / "secret"
    ctx.mkdir()
    (ctx / "mine.txt").write_text("mine")
    secret.mkdir()
    (secret / "secret.txt").write_text("not yours")
    link = tmp_path / "ctx.swap"
    link.symlink_to(secret)
    seen: Counter[str] = Counter()
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(ctx), str(link)])
    try:
        for _ in range(200):
            out = io.BytesIO()
            try:
                write_context(out, [], directory=ctx)
            except UsageError as err:
                assert err.code == "context_unreadable" and err.exit_code == 2
                seen["refused"] += 1
                continue
            with tarfile.open(fileobj=out) as tar:
                names = set(tar.getnames())
            assert "secret.txt" not in names
            assert names == {"mine.txt"}
            seen["packed"] += 1
    finally:
        swapper.kill()
        swapper.wait()
    print(dict(seen))
