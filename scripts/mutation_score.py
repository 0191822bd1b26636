"""Kill rate of a mutmut run, less the mutants listed as equivalent (used by scripts/mutation).

``results`` is ``mutmut results --all true`` (one ``name: status`` line per mutant);
``equivalents`` lists mutants that cannot change behaviour, one per line, as
``<mutant name>  <reason>`` (``#`` starts a comment). A listed mutant that was killed, or
that no longer exists, is reported: its entry is stale (mutant numbers move when the
function they are in is edited).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

#: mutmut statuses that mean the tests noticed the mutant.
DETECTED = {"killed", "timeout", "segfault", "suspicious"}


def read_results(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            out[name] = status.strip()
    return out


def read_equivalents(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for raw in path.read_text().splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, _, reason = entry.partition(" ")
        if not reason.strip():
            sys.exit(f"{path}: {name} has no reason; say why it cannot change behaviour")
        out[name] = reason.strip()
    return out


def module_of(name: str) -> str:
    """``ds01.domain.labels.xǁContainerLabelsǁdecode__mutmut_3`` -> ``ds01.domain.labels``."""
    head = name.split("__mutmut_", 1)[0]
    return ".".join(part for part in head.split(".") if not part.startswith("x"))


def per_module(considered: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Killed and total non-equivalent mutants per module."""
    out: dict[str, tuple[int, int]] = {}
    for name, status in considered.items():
        done, total = out.get(module_of(name), (0, 0))
        out[module_of(name)] = (done + (status in DETECTED), total + 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("equivalents", type=Path)
    parser.add_argument("--floor", type=float, default=90.0)
    args = parser.parse_args()
    results = read_results(args.results)
    if not results:
        print("mutation: no mutants in the results", file=sys.stderr)
        return 1
    equivalents = read_equivalents(args.equivalents)
    counts = Counter(results.values())
    equivalent = {n for n in equivalents if results.get(n) == "survived"}
    stale = sorted(n for n in equivalents if n in results and results[n] != "survived")
    considered = {n: s for n, s in results.items() if n not in equivalent}
    killed = sum(1 for s in considered.values() if s in DETECTED)
    survivors = sorted(n for n, s in considered.items() if s not in DETECTED)
    rate = 100.0 * killed / len(considered) if considered else 100.0
    print("mutation: statuses " + ", ".join(f"{s} {c}" for s, c in sorted(counts.items())))
    for module, (done, total) in sorted(per_module(considered).items()):
        print(f"  {module:<34} killed {done:5} of {total:5} = {100.0 * done / total:5.1f} %")
    for name in survivors:
        print(f"  survived: {name}")
    for name in stale:
        print(f"  stale equivalent entry (was {results[name]}): {name}")
    print(
        f"mutation: {len(results)} mutants, {len(equivalent)} listed as equivalent; "
        f"killed {killed} of {len(considered)} non-equivalent = {rate:.1f} % "
        f"(floor {args.floor:g} %)"
    )
    return 0 if rate >= args.floor else 1


if __name__ == "__main__":
    sys.exit(main())
