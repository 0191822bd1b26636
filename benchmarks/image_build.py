"""Benchmark: a cold image build, then the rebuild after adding one custom pip package.

Issue 5's target: the rebuild takes at most 20% of the cold build, because the package
tiers come before the custom tier and Docker reuses every layer above it. Both builds go
through the real service (``ImageService.create`` / ``update``) on the hermetic base
image, the cold one with Docker's cache off (``nocache``) so earlier runs don't help it.

    .venv/bin/python benchmarks/image_build.py            # default tiers (Jupyter, data science)
    .venv/bin/python benchmarks/image_build.py --light    # framework + system + custom only

Each round is a cold build and the rebuild after it (``--rounds``, default 3); the
table gives min / median / max of each, and the ratio of the medians.

Runs as root (it acts for a made-up unprivileged uid, with a private workspace and state
directory) or as any user who may use Docker. Prints a table and the ratio; exits
non-zero only when something fails, never because of the timings. The image it builds is
deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _stats import spread  # benchmarks/ is on sys.path when a script here runs
from ds01.adapters.docker_engine import DockerEngine
from ds01.config.settings import BuildSettings, GpuSettings, Settings
from ds01.domain.actor import Actor
from ds01.errors import DS01Error
from ds01.services.context import AppContext
from ds01.services.image.service import (
    ImageCreateRequest,
    ImageResult,
    ImageService,
    ImageUpdateRequest,
)

HERMETIC_BASE = "aimehub/pytorch-2.8.0-aime-cuda12.6.3"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TARGET = 0.20


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=HERMETIC_BASE, help="base image (must be local)")
    parser.add_argument("--light", action="store_true", help="skip the Jupyter/data tiers")
    parser.add_argument("--rounds", type=int, default=3, help="cold build + rebuild, N times")
    parser.add_argument("--pip", default="tomli-w", help="the custom package of the cold build")
    parser.add_argument("--add", default="iniconfig", help="the package the rebuild adds")
    parser.add_argument(
        "--ca",
        type=Path,
        default=HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None,
        help="CA bundle trusted inside the build (default: the host's)",
    )
    return parser.parse_args()


def _actor(root: Path) -> Actor:
    home = root / "home"
    home.mkdir()
    uid = os.getuid() or 4242
    gid = os.getgid() or 4242
    if os.geteuid() == 0:
        os.chown(home, uid, gid)
    return Actor(uid=uid, gid=gid, name="ds01-bench", home=str(home))


def _context(root: Path, actor: Actor, ca: Path | None) -> AppContext:
    state = root / "state"
    state.mkdir()
    settings = Settings(
        state_dir=state,
        workspace_root="~/workspace",
        gpu=GpuSettings(inventory="none"),
        build=BuildSettings(ca_certificates=[ca] if ca else []),
    )
    return AppContext(settings=settings, actor=actor, engine=DockerEngine())


def main() -> int:
    args = _parse()
    engine = DockerEngine()
    try:
        if engine.image(args.base) is None:
            print(f"{args.base} is not present locally: run scripts/hermetic-base.sh first.")
            return 2
    except DS01Error as exc:
        print(f"no Docker engine: {exc.message}")
        return 2
    tiers = "framework, system, custom" if args.light else "framework, system, base, custom"
    print(f"image build benchmark on {args.base} (tiers: {tiers}; cold build without cache)")
    cold: list[float] = []
    rebuild: list[float] = []
    cached: list[str] = []
    for n in range(args.rounds):
        result = _one_round(args, n)
        if result is None:
            return 1
        cold.append(result[0].seconds or 0.0)
        rebuild.append(result[1].seconds or 0.0)
        cached.append(f"{result[1].cached_steps}/{result[1].steps}")
    print(f"  cold build:          {spread(cold, digits=1)}")
    print(f"  rebuild (+{args.add}): {spread(rebuild, digits=1)}")
    print(f"  cached steps per rebuild: {', '.join(cached)}")
    ratio = statistics.median(rebuild) / (statistics.median(cold) or 1.0)
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"rebuild / cold (medians) = {ratio:.1%} (target <= {TARGET:.0%}: {verdict})")
    return 0


def _one_round(args: argparse.Namespace, n: int) -> tuple[ImageResult, ImageResult] | None:
    """One cold build and its rebuild, in a private workspace; the image is deleted after."""
    root = Path(tempfile.mkdtemp(prefix="ds01-bench-"))
    root.chmod(0o755)
    actor = _actor(root)
    ctx = _context(root, actor, args.ca)
    service = ImageService(ctx)
    name = f"bench-{os.getpid()}-{n}"
    try:
        cold = service.create(
            actor,
            ImageCreateRequest(
                name=name,
                base=args.base,
                jupyter=not args.light,
                datascience=not args.light,
                pip=(args.pip,),
                nocache=True,
                cwd=root,
            ),
        )
        rebuild = service.update(actor, ImageUpdateRequest(name=name, add_pip=(args.add,)))
    except DS01Error as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return None
    finally:
        try:
            service.delete(actor, name, force=True)
        except DS01Error as exc:
            print(f"note: clean-up: {exc.message}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    return cold, rebuild


if __name__ == "__main__":
    sys.exit(main())
