"""Hostile inputs, as a real unprivileged user: every one is refused cleanly (issue 10).

211 cases (48 names, 35 package specs, 11 requirements files, 26 policy YAML, 20
ds01.yaml, 16 inventory JSON, 11 catalog lines, 12 Dockerfiles, 32 CLI numbers and
dates). For each the installed ``ds01`` must exit 2 (bad input) or 3 (refused by
policy), say why on stderr, and print no traceback (only ``DS01_DEBUG`` shows one). No
container of the test user and no new workspace directory may be left behind.

Hostile files are written root-owned, mode 0644, in a root-owned 0755 directory inside
the test installation, because DS01 trusts only such files: the point is that even a
trusted file with hostile content is refused, not that an untrusted one is.
"""

from __future__ import annotations

import dataclasses
import json
import pwd
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import ONE_H200, Ds01Env

pytestmark = pytest.mark.docker

USER = "ds01t-alice"

#: Case id -> why it fails today. A listed case is reported, not asserted.
EXPECTED_BUGS: dict[str, str] = {}


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    #: (file name, content) written into the case directory; "{file}" in argv is its path.
    file: tuple[str, str | bytes] | None = None
    #: Which config key points at the file: limits, inventory, catalog, or config (the
    #: file *is* the ds01.yaml).
    role: str | None = None
    user: str | None = USER


def _names() -> list[Case]:
    bad = [
        "#",
        "-x",
        "--",
        "._.",
        "a._.1000",
        "x" * 65,
        "x" * 300,
        "é",
        "naïve",
        "日本",
        "..",
        ".",
        "../etc",
        "a/b",
        "/abs",
        "a b",
        " ",
        "",
        "a\tb",
        "a\x01b",
        "a\x7fb",
        "a\nb",
        "a;rm -rf /",
        "$(id)",
        "`id`",
        "a|b",
        "a&b",
        "a>b",
        "*",
        "?",
        "a:b",
        "a@b",
        "a%b",
        "a\\b",
        "\u202eevil",
        "a\u200bb",
        ".hidden",
        "a..b/",
        "CON\x1b[31m",
        "name'quote",
    ]
    cases = [
        Case(f"name-container-{i}", ("container", "create", n, "pytorch", "--cpu-only"))
        for i, n in enumerate(bad)
    ]
    cases += [
        Case(f"name-project-{i}", ("project", "init", n, "--no-git"))
        for i, n in enumerate(["..", "a/b", "x" * 65, "#", "a b", "._.", "日本", ""])
    ]
    return cases


def _packages() -> list[Case]:
    pips = [
        "x; rm -rf /",
        "x && id",
        "$(id)",
        "`id`",
        "x | sh",
        "-e .",
        "-e /etc",
        "--index-url http://evil",
        "-r /etc/shadow",
        "--extra-index-url=http://e",
        "http://evil/x.whl",
        "git+https://evil/x",
        "file:///etc/passwd",
        "../x",
        "/etc/passwd",
        "x" * 5000,
        "x\ny",
        "x\\",
        "x'",
        'x"',
        "x>>=1",
        "x==",
        "x[",
        "x @ ",
        "\x00".replace("\x00", "\x01"),
    ]
    apts = [
        "a b; id",
        "$(id)",
        "-o APT::x=1",
        "--allow-unauthenticated",
        "a\nb",
        "../x",
        "x" * 5000,
        "A_B",
        "pkg=",
        "http://evil",
    ]
    cases = [
        Case(f"pip-{i}", ("project", "init", f"hpip{i}", "--no-git", "--pip", p))
        for i, p in enumerate(pips)
    ]
    cases += [
        Case(f"apt-{i}", ("project", "init", f"hapt{i}", "--no-git", "--apt", a))
        for i, a in enumerate(apts)
    ]
    return cases


def _requirements() -> list[Case]:
    reqs: list[str | bytes] = [
        "x; rm -rf /\n",
        "-e .\n",
        "-r /etc/shadow\n",
        "--index-url http://evil\n",
        "git+https://evil/x\n",
        "numpy\n" * 20000,
        "x" * 100000 + "\n",
        b"\xff\xfe\x00bad\n",
        "$(id)\n",
        "-c /etc/passwd\n",
        "file:///etc/passwd\n",
    ]
    return [
        Case(
            f"req-{i}",
            ("image", "create", f"hreq{i}", "--no-build", "-r", "{file}"),
            file=("requirements.txt", r),
        )
        for i, r in enumerate(reqs)
    ]


def _y(data: Any) -> str:
    return yaml.safe_dump(data)


def _policy() -> list[Case]:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
        f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
        f"*{chr(97 + i)}]\n"
        for i in range(9)
    )
    texts: list[str | bytes] = [
        bomb,
        "[" * 5000 + "]" * 5000,
        "{" * 5000 + "}" * 5000,
        "defaults: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
        "- a\n- b\n",
        "just a string\n",
        "42\n",
        "defaults: [1, 2]\n",
        "defaults: {max_containers: -1}\n",
        "defaults: {max_containers: many}\n",
        "defaults: {max_containers: .inf}\n",
        "defaults: {memory: -4g}\n",
        "defaults: {memory: lots}\n",
        "defaults: {cpus: -2}\n",
        "defaults: {max_gpus: 1e999}\n",
        "defaults: {idle_timeout: -5h}\n",
        "defaults: {nonsense_key: 1}\n",
        "groups: {g: [1]}\n",
        "groups: {g: {unix_group: 5, max_containers: 1}}\n",
        "users: {ds01t-alice: {max_containers: 99999999999999999999999}}\n",
        "default_group: nosuchgroup\ngroups: {}\n",
        "defaults: {max_containers: 1}\ndefaults: {max_containers: 2}\n",
        "!!python/object/apply:os.system [id]\n",
        "defaults: {max_containers: !!binary aGk=}\n",
        "\t- tab\n",
        b"\xff\xfe\xfd\n",
    ]
    return [
        Case(f"policy-{i}", ("limits",), file=("resource-limits.yaml", t), role="limits")
        for i, t in enumerate(texts)
    ]


def _config_texts(base: dict[str, Any]) -> list[str]:
    def over(**kw: Any) -> str:
        data = json.loads(json.dumps(base))
        for k, v in kw.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k].update(v)
            else:
                data[k] = v
        return _y(data)

    return [
        over(gpu={"lock_timeout": float("inf")}),
        over(gpu={"lock_timeout": -1}),
        over(gpu={"lock_timeout": "soon"}),
        over(enforcement={"interval": 0}),
        over(enforcement={"interval": -60}),
        over(enforcement={"busy_share": 7}),
        over(admin_group=""),
        over(admin_group=["a", "b"]),
        over(container={"ulimits": {"nofile": -1}}),
        over(container={"ulimits": {"nosuchlimit": 5}}),
        over(container={"ulimits": {"nofile": "lots"}}),
        over(container={"allowed_mount_roots": "/"}),
        over(container={"stop_timeout": 1.5}),
        over(queue={"aging_interval": 0}),
        over(limits=["a"]),
        over(unknown_top_key=1),
        over(gpu={"runtime": "magic"}),
        "[" * 5000 + "]" * 5000,
        "- a list\n",
        "gpu: &a [*a]\n",
    ]


def _inventory() -> list[str | bytes]:
    gpu = dict(ONE_H200["gpus"][0])
    return [
        "[" * 100000 + "]" * 100000,
        '{"gpus": ' + "[" * 100000 + "]" * 100000 + "}",
        json.dumps({"gpus": [{**gpu, "uuid": "GPU-a,GPU-b"}]}),
        json.dumps({"gpus": [{**gpu, "uuid": "GPU-a b"}]}),
        json.dumps({"gpus": [{**gpu, "index": "zero"}]}),
        json.dumps({"gpus": [{**gpu, "index": -1}]}),
        json.dumps({"gpus": [{**gpu, "index": 10**400}]}),
        json.dumps({"gpus": [{**gpu, "memory_mib": -1}]}),
        json.dumps({"gpus": [{**gpu, "memory_mib": 10**400}]}),
        json.dumps({"gpus": [gpu, gpu]}),
        json.dumps({"gpus": "all"}),
        json.dumps({"gpus": [1, 2]}),
        json.dumps([gpu]),
        "not json",
        '{"gpus": [NaN]}',
        b"\xff\xfe",
    ]


def _catalog() -> list[str | bytes]:
    good = "Pytorch, 2.8.0-aime, [CUDA_ADA], aimehub/pytorch-2.8.0-aime-cuda12.6.3\n"
    return [
        "Pytorch, 2.8.0, [CUDA_ADA], \n",
        "garbage\n",
        "Pytorch, 2.8.0\n",
        "Pytorch, 2.8.0, [], aimehub/x\n",
        "Pytorch, 2.8.0, [CUDA_ADA], aimehub/x; id\n",
        "Pytorch, 2.8.0, [CUDA_ADA], --privileged\n",
        "Pytorch, 2.8.0, [CUDA_ADA], UPPER/Case:tag\n",
        good + "Pytorch, 2.8.0, [CUDA_ADA], a b c\n",
        "x" * 100000 + "\n",
        b"\xff\xfe\n",
        ", , [CUDA_ADA], aimehub/x\n",
    ]


def _dockerfiles() -> list[str]:
    return [
        "ARG B=ds01/other-user-image._.9999:latest\nFROM ${B}\n",
        "FROM ${B}\n",
        "FROM nosuch-registry.invalid/none:latest\nLABEL aime.mlc.DS01_USER_NAME=x\n",
        "FROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\nLABEL aime.mlc.DS01_USER_NAME=bob\n",
        "FROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\nLABEL aime.mlc.USER=root\n",
        "FROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\nRUN <<EOF\nid\nEOF\n",
        "# escape=`\nFROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\n",
        "# syntax=evil/frontend\nFROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\n",
        "",
        "RUN id\n",
        "FROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\nUSER root\n",
        "FROM aimehub/pytorch-2.8.0-aime-cuda12.6.3\nRUN --mount=type=secret,id=x id\n",
    ]


def _numbers() -> list[Case]:
    argvs: list[tuple[str, ...]] = [
        ("events", "--limit", "1e23"),
        ("events", "--limit", "-1"),
        ("events", "--limit", "0"),
        ("events", "--limit", "99999999999999999999"),
        ("events", "--limit", "NaN"),
        ("events", "--limit", ""),
        ("events", "-n", "0x10"),
        ("gpu", "queue", "cancel", "99999999999999999999"),
        ("gpu", "queue", "cancel", "-1"),
        ("gpu", "queue", "cancel", "abc"),
        ("gpu", "queue", "cancel", "1.5"),
        ("admin", "exempt", "ds01t-bob", "--idle", "--until", "99999999d", "--reason", "x"),
        ("admin", "exempt", "ds01t-bob", "--idle", "--until", "-1d", "--reason", "x"),
        ("admin", "exempt", "ds01t-bob", "--idle", "--until", "2025-02-30", "--reason", "x"),
        ("admin", "exempt", "ds01t-bob", "--idle", "--until", "1999-01-01", "--reason", "x"),
        ("admin", "exempt", "ds01t-bob", "--idle", "--until", "", "--reason", "x"),
        ("container", "create", "hnum1", "pytorch", "--gpus", "-1"),
        ("container", "create", "hnum2", "pytorch", "--gpus", "1e9"),
        ("container", "create", "hnum3", "pytorch", "--gpus", "0"),
        ("container", "create", "hnum4", "pytorch", "--gpus", "99999999999999999999"),
        ("container", "create", "hnum5", "pytorch", "--gpu-profile", "99g.-1gb"),
        ("container", "stop", "nosuch", "-t", "-5"),
        ("container", "stop", "nosuch", "-t", "1e9"),
        ("container", "stop", "nosuch", "-t", "inf"),
    ]
    cases = [Case(f"num-{i}", a) for i, a in enumerate(argvs)]
    # The same dates as an admin (root, acting for alice): bad input, not a refusal.
    cases += [
        Case(
            f"num-admin-{i}",
            ("admin", "exempt", USER, "--idle", "--until", u, "--reason", "x"),
            user=None,
        )
        for i, u in enumerate(
            ["99999999d", "-1d", "2025-02-30", "1999-01-01", "", "never-ish", "0d", "1e9d"]
        )
    ]
    return cases


def _file_cases() -> list[Case]:
    # The ds01.yaml cases need the base config, known only at run time: made there.
    cases = [
        Case(f"inventory-{i}", ("gpu", "list"), file=("gpus.json", t), role="inventory")
        for i, t in enumerate(_inventory())
    ]
    cases += [
        Case(f"catalog-{i}", ("catalog", "list"), file=("catalog.repo", t), role="catalog")
        for i, t in enumerate(_catalog())
    ]
    cases += [
        Case(
            f"dockerfile-{i}",
            ("image", "create", f"hdf{i}", "--no-build", "--dockerfile", "{file}"),
            file=("Dockerfile", t),
        )
        for i, t in enumerate(_dockerfiles())
    ]
    return cases


CONFIG_CASES = 20
CATEGORIES: dict[str, list[Case]] = {
    "names": _names(),
    "packages": _packages(),
    "requirements": _requirements(),
    "policy": _policy(),
    "files": _file_cases(),
    "numbers": _numbers(),
}
TOTAL = sum(len(c) for c in CATEGORIES.values()) + CONFIG_CASES


def _write_root(path: Path, content: str | bytes) -> None:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(0o644)


def _run_case(env: Ds01Env, case: Case) -> str | None:
    """Run one case in its own root-owned directory; a failure message, or None."""
    work = env.root / "hostile" / case.id
    work.mkdir(parents=True, mode=0o755)
    work.chmod(0o755)
    argv = list(case.argv)
    config_path = env.config_path
    if case.file is not None:
        name, content = case.file
        target = work / name
        _write_root(target, content)
        argv = [a.replace("{file}", str(target)) for a in argv]
        if case.role == "config":
            config_path = target
        elif case.role is not None:
            data = yaml.safe_load(env.config_path.read_text())
            if case.role == "inventory":
                data["gpu"]["inventory"] = f"file:{target}"
            else:
                data[case.role] = str(target)
            config_path = work / "ds01.yaml"
            _write_root(config_path, yaml.safe_dump(data))
    result = dataclasses.replace(env, config_path=config_path).run_cli(case.user, *argv)
    err = result.stderr
    problems = []
    if result.returncode not in (2, 3):
        problems.append(f"exit {result.returncode}")
    if "Traceback" in err or "Traceback" in result.stdout:
        problems.append("traceback")
    if not err.strip():
        problems.append("empty stderr")
    if not problems:
        return None
    return f"{case.id} argv={argv[:6]!r}: {', '.join(problems)}; stderr: {err.strip()[:300]!r}"


def _run_all(env: Ds01Env, cases: list[Case]) -> None:
    home = Path(pwd.getpwnam(USER).pw_dir) / "workspace"
    before = set(home.iterdir()) if home.is_dir() else set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(zip(cases, pool.map(lambda c: _run_case(env, c), cases), strict=True))
    failures = [msg for case, msg in results if msg and case.id not in EXPECTED_BUGS]
    fixed = [case.id for case, msg in results if not msg and case.id in EXPECTED_BUGS]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    assert not fixed, f"listed in EXPECTED_BUGS but now pass (remove them): {fixed}"
    uid = pwd.getpwnam(USER).pw_uid
    left = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"name=._.{uid}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not [n for n in left if n.endswith(f"._.{uid}")], left
    after = set(home.iterdir()) if home.is_dir() else set()
    assert after == before, sorted(str(p) for p in after - before)


def test_case_count() -> None:
    assert TOTAL >= 150
    ids = [c.id for cases in CATEGORIES.values() for c in cases]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_hostile_inputs_exit_2_or_3_without_traceback(ds01_env: Ds01Env, category: str) -> None:
    _run_all(ds01_env, CATEGORIES[category])


def test_hostile_ds01_yaml(ds01_env: Ds01Env) -> None:
    base = yaml.safe_load(ds01_env.config_path.read_text())
    texts = _config_texts(base)
    assert len(texts) == CONFIG_CASES
    cases = [
        Case(f"config-{i}", ("limits",), file=("ds01.yaml", t), role="config")
        for i, t in enumerate(texts)
    ]
    _run_all(ds01_env, cases)
