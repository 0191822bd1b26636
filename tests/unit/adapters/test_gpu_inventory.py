"""GPU inventory backends: NVML (through a fake module), nvidia-smi parsing, the JSON
file, none, and the ``auto`` chain.

The real H200 captures in ../shared/fixtures must give the same inventory through the
nvidia-smi parser and from the values recorded through NVML. Synthetic MIG scenarios
(A100-40GB, A30) are rendered both as a fake NVML and as nvidia-smi text in the real
formats, and must agree too.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.adapters.gpu.factory import AutoInventory, NoneInventory, open_inventory
from ds01.adapters.gpu.file import FileInventory, simulated_uuid
from ds01.adapters.gpu.nvml import NvmlInventory
from ds01.adapters.gpu.smi import (
    QUERY_GPU_FIELDS,
    SmiInventory,
    compute_capability_from_name,
    parse_compute_apps,
    parse_gpu_list,
    parse_instance_profiles,
    parse_query_gpu,
    run_command,
)
from ds01.domain.devices import (
    Device,
    Gpu,
    GpuProcess,
    Inventory,
    MigInstance,
    devices_for_gpu,
    merge_processes,
    total_slices_of,
)
from ds01.errors import ConfigError, GpuQueryError, GpuUnavailableError
from tests.unit.adapters import fakes_nvml
from tests.unit.adapters.fakes_nvml import MIB, FakeGpu, FakeNvml, FakeProcess

PROJECT_ROOT = Path(__file__).resolve().parents[3]

# -- nvidia-smi captures and a runner that serves them ---------------------------------


def read_capture(path: Path) -> tuple[tuple[str, ...], int, str]:
    """A fixture file: ``### <command>``, the output, ``### rc=<exit code>``."""
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0].startswith("### "), path
    footer = re.fullmatch(r"### rc=(\d+)\s*", lines[-1])
    assert footer, path
    return tuple(shlex.split(lines[0][4:])), int(footer.group(1)), "".join(lines[1:-1])


class FakeRunner:
    """Answers exactly the argument lists it was given; anything else fails like
    nvidia-smi does for an unknown query (exit 2)."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    @classmethod
    def from_captures(cls, *paths: Path) -> FakeRunner:
        answers = {}
        for path in paths:
            argv, rc, body = read_capture(path)
            answers[argv] = (rc, body)
        return cls(answers)

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        self.calls.append(tuple(argv))
        return self.answers.get(tuple(argv), (2, "Invalid combination of input arguments.\n"))


QUERY_GPU = (
    "nvidia-smi",
    "--query-gpu=" + ",".join(QUERY_GPU_FIELDS),
    "--format=csv,noheader,nounits",
)
QUERY_APPS = (
    "nvidia-smi",
    "--query-compute-apps=pid,process_name,used_memory,gpu_uuid",
    "--format=csv,noheader,nounits",
)
QUERY_CC = ("nvidia-smi", "--query-gpu=uuid,compute_cap", "--format=csv,noheader,nounits")
LIST_GPUS = ("nvidia-smi", "-L")
LIST_PROFILES = ("nvidia-smi", "mig", "-lgip")

# The busy capture's process, named in ../shared/fixtures/README.md ("python3", PID 455);
# busy-nvml.json records pid and memory but not the name NVML would have given.
BUSY_PROCESS_NAMES = {455: "python3"}


def h200_busy_runner(h200_dir: Path) -> FakeRunner:
    return FakeRunner.from_captures(
        h200_dir / "busy-query-gpu.txt",
        h200_dir / "busy-compute-apps-noheader.txt",
        h200_dir / "mig-lgip.txt",
    )


def h200_busy_nvml(h200_dir: Path) -> FakeNvml:
    _, _, lgip = read_capture(h200_dir / "mig-lgip.txt")
    return fakes_nvml.from_recorded(
        h200_dir / "busy-nvml.json",
        profiles=fakes_nvml.profiles_from_lgip(lgip),
        process_names=BUSY_PROCESS_NAMES,
    )


def without_source(inventory: Inventory) -> tuple[tuple[Gpu, ...], tuple[Device, ...]]:
    return inventory.gpus, inventory.devices


# -- the real H200: nvidia-smi and NVML agree ------------------------------------------


def test_h200_busy_capture_gives_the_same_inventory_through_smi_and_nvml(h200_dir: Path) -> None:
    smi = SmiInventory(run=h200_busy_runner(h200_dir)).read()
    nvml = NvmlInventory(nvml=h200_busy_nvml(h200_dir)).read()

    assert without_source(smi) == without_source(nvml)
    assert (smi.source, nvml.source) == ("nvidia-smi", "nvml")


def test_h200_busy_inventory_has_the_recorded_values(h200_dir: Path) -> None:
    inventory = NvmlInventory(nvml=h200_busy_nvml(h200_dir)).read()

    (gpu,) = inventory.gpus
    assert gpu == Gpu(
        index=0,
        uuid="GPU-4336be95-7b17-b1da-7b70-0352e1d3655d",
        name="NVIDIA H200",
        memory_mib=143771,  # 150754820096 B / 2**20, exactly
        compute_capability=(9, 0),
        mig_enabled=False,
        total_slices=7,  # the 7g.141gb profile
        utilization_gpu=100,
        memory_used_mib=4917,  # total - free: 143771 - 138854 in nvidia-smi's figures
        driver_version="580.159.04",
        processes=(GpuProcess(pid=455, used_memory_mib=4294, name="python3"),),
    )
    (device,) = inventory.devices
    assert device.uuid == gpu.uuid
    assert (device.slices, device.total_slices, device.mig_profile) == (7, 7, None)
    assert device.equivalents == 1
    assert device.utilization_gpu == 100
    assert device.processes == gpu.processes


def test_h200_idle_capture_through_smi(h200_dir: Path) -> None:
    runner = FakeRunner.from_captures(
        h200_dir / "query-gpu-csv-noheader-nounits.txt", h200_dir / "mig-lgip.txt"
    )
    # No idle compute-apps capture exists; nvidia-smi.txt shows "No running processes
    # found", which the CSV query prints as no lines at all.
    runner.answers[QUERY_APPS] = (0, "")

    inventory = SmiInventory(run=runner).read()

    (gpu,) = inventory.gpus
    assert (gpu.utilization_gpu, gpu.memory_mib, gpu.processes) == (0, 143771, ())
    assert gpu.memory_used_mib == 143771 - 143156  # the driver's reservation
    assert gpu.compute_capability == (9, 0)  # from the product name: no compute_cap capture
    assert gpu.total_slices == 7 and not gpu.mig_enabled
    assert [d.uuid for d in inventory.devices] == [gpu.uuid]
    assert inventory.total_equivalents == 1


def test_smi_runs_only_the_commands_it_needs_and_caches_fixed_facts(h200_dir: Path) -> None:
    runner = h200_busy_runner(h200_dir)
    backend = SmiInventory(run=runner)

    first = backend.read()
    second = backend.read()

    assert first == second
    assert LIST_GPUS not in runner.calls  # no GPU has MIG enabled
    assert runner.calls.count(LIST_PROFILES) == 1
    assert runner.calls.count(QUERY_CC) == 1
    assert runner.calls.count(QUERY_GPU) == 2 and runner.calls.count(QUERY_APPS) == 2


def test_smi_uses_compute_cap_when_the_driver_offers_it(h200_dir: Path) -> None:
    runner = h200_busy_runner(h200_dir)
    runner.answers[QUERY_CC] = (0, "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d, 9.1\n")

    (gpu,) = SmiInventory(run=runner).read().gpus

    assert gpu.compute_capability == (9, 1)


def test_smi_executable_can_be_an_absolute_path(h200_dir: Path) -> None:
    inner = h200_busy_runner(h200_dir)

    def runner(argv: list[str]) -> tuple[int, str]:
        assert argv[0] == "/usr/local/nvidia/bin/nvidia-smi"
        return inner(["nvidia-smi", *argv[1:]])

    inventory = SmiInventory(run=runner, executable="/usr/local/nvidia/bin/nvidia-smi").read()

    assert len(inventory.devices) == 1


# -- nvidia-smi parsers on the real captures --------------------------------------------


def test_lgip_table_of_the_h200(h200_dir: Path) -> None:
    _, _, text = read_capture(h200_dir / "mig-lgip.txt")

    table = parse_instance_profiles(text)

    assert list(table) == [0]
    by_name = {p.name: p for p in table[0]}
    assert list(by_name) == [
        "1g.18gb",
        "1g.18gb+me",
        "1g.35gb",
        "2g.35gb",
        "3g.71gb",
        "4g.71gb",
        "7g.141gb",
    ]
    assert (by_name["7g.141gb"].slices, by_name["7g.141gb"].memory_mib) == (7, 140 * 1024)
    assert (by_name["1g.18gb"].slices, by_name["1g.18gb"].memory_mib) == (1, 16 * 1024)
    assert by_name["1g.18gb+me"].slices == 1
    assert by_name["1g.35gb"].memory_mib == 33280  # 32.50 GiB
    assert (by_name["3g.71gb"].profile_id, by_name["3g.71gb"].slices) == (9, 3)
    assert total_slices_of(table[0]) == 7


def test_mig_disabled_listing_parses_as_no_mig(h200_dir: Path) -> None:
    for name in ("mig-lgi.txt", "mig-lci.txt"):
        _, rc, text = read_capture(h200_dir / name)
        assert rc == 0
        assert "No MIG-enabled devices found." in text
        assert parse_instance_profiles(text) == {}
        assert parse_gpu_list(text) == []


def test_gpu_list_of_the_h200(h200_dir: Path) -> None:
    _, _, text = read_capture(h200_dir / "nvidia-smi-L.txt")

    (gpu,) = parse_gpu_list(text)

    assert (gpu.index, gpu.name, gpu.uuid, gpu.mig_devices) == (
        0,
        "NVIDIA H200",
        "GPU-4336be95-7b17-b1da-7b70-0352e1d3655d",
        (),
    )


def test_gpu_list_with_mig_devices_in_the_real_line_format() -> None:
    text = (
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n"
        "  MIG 3g.20gb     Device  0: (UUID: MIG-1111)\n"
        "  MIG 1g.5gb      Device  1: (UUID: MIG-2222)\n"
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb)\n"
        "  MIG 1c.3g.20gb  Device  0: (UUID: MIG-3333)\n"
    )

    gpus = parse_gpu_list(text)

    assert [(g.index, g.uuid, g.mig_devices) for g in gpus] == [
        (0, "GPU-aaaa", (("3g.20gb", "MIG-1111"), ("1g.5gb", "MIG-2222"))),
        (1, "GPU-bbbb", (("1c.3g.20gb", "MIG-3333"),)),
    ]


def test_query_gpu_header_capture_matches_the_field_list(h200_dir: Path) -> None:
    argv, _, _ = read_capture(h200_dir / "query-gpu-csv-noheader-nounits.txt")
    assert argv == QUERY_GPU
    argv, _, _ = read_capture(h200_dir / "busy-compute-apps-noheader.txt")
    assert argv == QUERY_APPS


def test_query_gpu_reads_every_spelling_of_no_value() -> None:
    line = (
        "3, GPU-x, NVIDIA L4, 00000000:01:00.0, 23034, 0, [N/A], [Not Supported], N/A, 30, "
        "[Unknown Error], 72.00, [N/A], [N/A], Default, 550.54.15, Enabled\n"
    )

    (row,) = parse_query_gpu(line)

    assert (row.index, row.name, row.memory_total_mib) == (3, "NVIDIA L4", 23034)
    assert row.memory_free_mib is None and row.utilization_gpu is None
    assert row.mig_mode is None and not row.mig_capable


def test_query_gpu_rejects_a_line_with_the_wrong_field_count() -> None:
    with pytest.raises(GpuQueryError, match="expected 17"):
        parse_query_gpu("0, GPU-x, NVIDIA H200\n")


def test_compute_apps_tolerates_commas_and_missing_memory() -> None:
    text = "17, python3, a, b, 100, GPU-x\n18, worker, [N/A], MIG-y\n"

    assert parse_compute_apps(text) == [
        ("GPU-x", GpuProcess(17, 100, "python3, a, b")),
        ("MIG-y", GpuProcess(18, None, "worker")),
    ]
    with pytest.raises(
        GpuQueryError,
        match=r"unexpected nvidia-smi --query-compute-apps line: 'No running processes found'",
    ):
        parse_compute_apps("No running processes found\n")


@pytest.mark.parametrize(
    ("name", "cc"),
    [
        ("NVIDIA H200", (9, 0)),
        ("NVIDIA H100 80GB HBM3", (9, 0)),
        ("NVIDIA A100-SXM4-40GB", (8, 0)),
        ("NVIDIA A30", (8, 0)),
        ("NVIDIA A10", (8, 6)),
        ("NVIDIA RTX A6000", (8, 6)),
        ("NVIDIA L40S", (8, 9)),
        ("NVIDIA L4", (8, 9)),
        ("NVIDIA GeForce RTX 4090", (8, 9)),
        ("NVIDIA B200", (10, 0)),
        ("Tesla V100-SXM2-16GB", (7, 0)),
        ("Tesla T4", (7, 5)),
        ("Some Future GPU", None),
    ],
)
def test_compute_capability_from_product_name(name: str, cc: tuple[int, int] | None) -> None:
    assert compute_capability_from_name(name) == cc


# -- nvidia-smi failure modes -------------------------------------------------------------


@pytest.mark.parametrize("rc", [9, 12])
def test_smi_without_driver_is_unavailable(rc: int) -> None:
    runner = FakeRunner({QUERY_GPU: (rc, "NVIDIA-SMI has failed because it couldn't communicate")})

    with pytest.raises(
        GpuUnavailableError,
        match=(
            r"^nvidia-smi cannot be used: the (NVIDIA driver is not loaded \(exit 9\)|NVML "
            r"library was not found \(exit 12\))"
        ),
    ):
        SmiInventory(run=runner).read()


def test_smi_real_failure_is_a_query_error_not_unavailable() -> None:
    runner = FakeRunner({QUERY_GPU: (15, "Unable to determine the device handle: GPU is lost\n")})

    with pytest.raises(GpuQueryError, match="exit 15") as info:
        SmiInventory(run=runner).read()
    assert not isinstance(info.value, GpuUnavailableError)


def test_smi_with_driver_but_no_gpus_is_empty() -> None:
    runner = FakeRunner({QUERY_GPU: (6, "No devices were found\n")})

    assert SmiInventory(run=runner).read() == Inventory(source="nvidia-smi")


def test_run_command_runs_an_argument_list(tmp_path: Path) -> None:
    rc, out = run_command([sys.executable, "-c", "import sys; print(sys.argv[1])", "a b; c"])
    assert (rc, out) == (0, "a b; c\n")
    rc, out = run_command([sys.executable, "-c", "import sys; sys.exit('bad')"])
    assert rc == 1 and "bad" in out


def test_run_command_missing_program_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(GpuUnavailableError, match="not found"):
        run_command([str(tmp_path / "nvidia-smi")])


def test_run_command_timeout_is_a_query_error() -> None:
    with pytest.raises(GpuQueryError, match="did not answer"):
        run_command([sys.executable, "-c", "import time; time.sleep(10)"], timeout_s=0.3)


# -- synthetic MIG scenarios for both backends --------------------------------------------


def app_line(fake: FakeNvml, proc: FakeProcess, uuid: str) -> str:
    used = "[N/A]" if proc.used_bytes is None else str(proc.used_bytes // MIB)
    return f"{proc.pid}, {fake.process_names.get(proc.pid, '')}, {used}, {uuid}"


def render_smi(fake: FakeNvml) -> FakeRunner:
    """What nvidia-smi would print for the fake's GPUs, in the real formats."""
    query, apps, listing, lgip, caps = [], [], [], [], []
    for i, g in enumerate(fake.gpus):
        total, free = g.total_bytes // MIB, g.free_bytes // MIB
        util = "[N/A]" if g.mig_enabled or g.utilization_gpu is None else str(g.utilization_gpu)
        mig = "[N/A]" if g.mig_mode is None else ("Enabled" if g.mig_enabled else "Disabled")
        query.append(
            f"{i}, {g.uuid}, {g.name}, 00000000:{i + 1:02X}:00.0, {total}, {total - free - 600}, "
            f"{free}, {util}, 0, 40, 60.00, 400.00, {mig}, {mig}, Default, {fake.driver}, "
            "Enabled"
        )
        caps.append(f"{g.uuid}, {g.compute_capability[0]}.{g.compute_capability[1]}")
        listing.append(f"GPU {i}: {g.name} (UUID: {g.uuid})")
        for k, m in enumerate(g.migs):
            name = m.profile.name if m.ci_slices is None else f"{m.ci_slices}c.{m.profile.name}"
            listing.append(f"  MIG {name:<12}  Device {k:>2}: (UUID: {m.uuid})")
            apps += [app_line(fake, p, m.uuid) for p in m.processes]
        apps += [app_line(fake, p, g.uuid) for p in g.compute]
        for p in g.profiles:
            lgip.append(
                f"|  {i:2d}  MIG {p.name:<14} {p.id:3d}     {p.instance_count}/{p.instance_count}"
                f"        {p.memory_mb / 1024:<10.2f} No     {p.multiprocessors:<6d} "
                f"{p.decoders:<5d} {p.encoders:<3d} |"
            )
            lgip.append(f"|{'':63}{p.copy_engines:<6d}{p.jpegs:<6d}{p.ofas:<3d} |")
            lgip.append("+" + "-" * 79 + "+")
    header = (
        "+" + "-" * 79 + "+\n| GPU instance profiles:" + " " * 56 + "|\n"
        "| GPU   Name               ID    Instances   Memory     P2P    SM    DEC   ENC  |\n"
        "|" + "=" * 79 + "|\n"
    )
    return FakeRunner(
        {
            QUERY_GPU: (0, "\n".join(query) + "\n"),
            QUERY_APPS: (0, "".join(a + "\n" for a in apps)),
            QUERY_CC: (0, "\n".join(caps) + "\n"),
            LIST_GPUS: (0, "\n".join(listing) + "\n"),
            LIST_PROFILES: (0, header + "\n".join(lgip) + "\n")
            if lgip
            else (6, "No MIG-supported devices found.\n"),
        }
    )


def comparable(inventory: Inventory) -> tuple[tuple[Gpu, ...], tuple[Device, ...]]:
    """nvidia-smi cannot see a MIG device's memory in use; NVML can. Compare the rest."""
    devices = tuple(
        dataclasses.replace(d, memory_used_mib=None) if d.is_mig else d for d in inventory.devices
    )
    return inventory.gpus, devices


def both_backends(fake: FakeNvml) -> tuple[Inventory, Inventory]:
    nvml = NvmlInventory(nvml=fake).read()
    smi = SmiInventory(run=render_smi(fake)).read()
    assert comparable(nvml) == comparable(smi)
    return nvml, smi


def test_a100_split_into_seven_1g_5gb() -> None:
    fake = FakeNvml([fakes_nvml.a100_40gb(0, ["1g.5gb"] * 7)])

    for inventory in both_backends(fake):
        (gpu,) = inventory.gpus
        assert gpu.mig_enabled and gpu.total_slices == 7
        assert gpu.utilization_gpu is None
        assert len(inventory.devices) == 7
        assert {d.parent_uuid for d in inventory.devices} == {gpu.uuid}
        for d in inventory.devices:
            assert (d.mig_profile, d.slices, d.total_slices) == ("1g.5gb", 1, 7)
            assert d.equivalents == Fraction(1, 7)
            assert d.memory_mib == 4864 and d.utilization_gpu is None
            assert d.label == "GPU 0 MIG 1g.5gb"
        assert inventory.total_equivalents == 1
        assert gpu.uuid not in {d.uuid for d in inventory.devices}


def test_a100_mixed_layout_with_a_hole_in_the_slots() -> None:
    fake = FakeNvml([fakes_nvml.a100_40gb(0, ["3g.20gb", "1g.5gb", "1g.5gb"], holes=(1,))])

    for inventory in both_backends(fake):
        assert [(d.mig_profile, d.equivalents) for d in inventory.devices] == [
            ("3g.20gb", Fraction(3, 7)),
            ("1g.5gb", Fraction(1, 7)),
            ("1g.5gb", Fraction(1, 7)),
        ]
        assert inventory.total_equivalents == Fraction(5, 7)
        assert inventory.devices[0].memory_mib == 19968


def test_a30_has_four_slices() -> None:
    fake = FakeNvml([fakes_nvml.a30(0, ["1g.6gb", "1g.6gb", "2g.12gb"])])

    for inventory in both_backends(fake):
        assert inventory.gpus[0].total_slices == 4
        assert [(d.mig_profile, d.equivalents) for d in inventory.devices] == [
            ("1g.6gb", Fraction(1, 4)),
            ("1g.6gb", Fraction(1, 4)),
            ("2g.12gb", Fraction(1, 2)),
        ]
        assert inventory.total_equivalents == 1


def test_mig_enabled_gpu_without_instances_offers_nothing() -> None:
    fake = FakeNvml([fakes_nvml.a100_40gb(0, []), fakes_nvml.a100_40gb(1, ["7g.40gb"])])

    for inventory in both_backends(fake):
        assert [g.mig_enabled for g in inventory.gpus] == [True, True]
        assert [d.gpu_index for d in inventory.devices] == [1]
        (whole,) = inventory.devices
        assert (whole.mig_profile, whole.equivalents, whole.memory_mib) == (
            "7g.40gb",
            Fraction(1),
            40192,
        )


def test_me_profile_and_small_compute_instance_are_named_like_nvidia_smi() -> None:
    gpu = fakes_nvml.a100_40gb(0, ["1g.5gb+me", "3g.20gb"])
    assert gpu.mig_slots[1] is not None
    gpu.mig_slots[1].ci_slices = 1  # a 1-slice compute instance in a 3g GPU instance
    fake = FakeNvml([gpu])

    for inventory in both_backends(fake):
        assert [(d.mig_profile, d.slices, d.equivalents) for d in inventory.devices] == [
            ("1g.5gb+me", 1, Fraction(1, 7)),
            ("1c.3g.20gb", 1, Fraction(1, 7)),
        ]


def test_processes_on_mig_devices_belong_to_the_device_and_the_gpu() -> None:
    gpu = fakes_nvml.a100_40gb(0, ["3g.20gb", "1g.5gb"])
    assert gpu.mig_slots[0] is not None
    gpu.mig_slots[0].processes = [FakeProcess(4242, 2000 * MIB)]
    gpu.mig_slots[0].used_bytes = 2048 * MIB
    fake = FakeNvml([gpu], process_names={4242: "python"})

    nvml, smi = both_backends(fake)

    for inventory in (nvml, smi):
        busy, idle = inventory.devices
        assert busy.processes == (GpuProcess(4242, 2000, "python"),)
        assert idle.processes == ()
        assert inventory.gpus[0].processes == busy.processes
    assert nvml.devices[0].memory_used_mib == 2048  # NVML sees it; nvidia-smi -L does not
    assert smi.devices[0].memory_used_mib is None


def test_gpu_without_mig_support_is_one_whole_device() -> None:
    l4 = FakeGpu(
        name="NVIDIA L4",
        uuid="GPU-l4000000-0000-4000-8000-000000000000",
        total_bytes=23034 * MIB,
        free_bytes=22000 * MIB,
        compute_capability=(8, 9),
        utilization_gpu=35,
        compute=[FakeProcess(7, 512 * MIB)],
        graphics=[FakeProcess(7, 512 * MIB), FakeProcess(8, None)],
    )
    fake = FakeNvml([l4], process_names={7: "train", 8: "Xorg"})

    nvml, smi = both_backends_no_graphics(fake)

    (gpu,) = nvml.gpus
    assert gpu.total_slices is None and not gpu.mig_enabled
    (device,) = nvml.devices
    assert (device.slices, device.total_slices, device.equivalents) == (1, 1, Fraction(1))
    # compute and graphics lists deduplicated by pid
    assert device.processes == (GpuProcess(7, 512, "train"), GpuProcess(8, None, "Xorg"))
    assert (device.utilization_gpu, device.memory_used_mib) == (35, 1034)
    assert smi.devices[0].equivalents == 1


def both_backends_no_graphics(fake: FakeNvml) -> tuple[Inventory, Inventory]:
    """nvidia-smi's --query-compute-apps lists compute processes only."""
    nvml = NvmlInventory(nvml=fake).read()
    runner = render_smi(fake)
    smi = SmiInventory(run=runner).read()
    assert LIST_PROFILES not in runner.calls  # MIG unsupported: no profile table wanted
    assert dataclasses.replace(nvml.gpus[0], processes=()) == dataclasses.replace(
        smi.gpus[0], processes=()
    )
    return nvml, smi


@settings(max_examples=40, deadline=None)
@given(
    layouts=st.lists(
        st.lists(
            st.sampled_from(["1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb"]), max_size=7
        ),
        min_size=1,
        max_size=4,
    )
)
def test_random_mig_layouts_agree_across_backends(layouts: list[list[str]]) -> None:
    gpus = []
    for index, wanted in enumerate(layouts):
        layout, used = [], 0
        for name in wanted:  # keep within the GPU's 7 slices, as the driver would
            slices = int(name[0])
            if used + slices <= 7:
                layout.append(name)
                used += slices
        gpus.append(fakes_nvml.a100_40gb(index, layout))
    fake = FakeNvml(gpus)

    nvml, _ = both_backends(fake)

    expected = sum(
        (Fraction(int(n[0]), 7) for g in gpus for n in (m.profile.name for m in g.migs)),
        Fraction(0),
    )
    assert nvml.total_equivalents == expected
    assert len({d.uuid for d in nvml.devices}) == len(nvml.devices)


# -- NVML specifics ------------------------------------------------------------------------


def test_fake_serves_only_real_pynvml_names() -> None:
    for name in fakes_nvml.SERVED:
        assert callable(getattr(pynvml, name)), name
        assert callable(getattr(FakeNvml([]), name)), name


def test_nvml_initialises_once_per_module(h200_dir: Path) -> None:
    fake = h200_busy_nvml(h200_dir)
    first = NvmlInventory(nvml=fake)

    first.read()
    first.read()
    NvmlInventory(nvml=fake).read()

    assert fake.init_calls == 1


@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED]
)
def test_nvml_absent_is_unavailable(code: int) -> None:
    fake = FakeNvml([], init_error=code)

    with pytest.raises(GpuUnavailableError) as info:
        NvmlInventory(nvml=fake).read()
    assert isinstance(info.value.__cause__, pynvml.NVMLError)


def test_nvml_real_failure_is_a_query_error(h200_dir: Path) -> None:
    fake = h200_busy_nvml(h200_dir)

    def lost(handle: object, version: int | None = None) -> object:
        raise pynvml.NVMLError_GpuIsLost()

    fake.nvmlDeviceGetMemoryInfo = lost  # type: ignore[method-assign]

    with pytest.raises(GpuQueryError, match="GPU is lost") as info:
        NvmlInventory(nvml=fake).read()
    assert not isinstance(info.value, GpuUnavailableError)
    assert isinstance(info.value.__cause__, pynvml.NVMLError_GpuIsLost)
    assert info.value.exit_code == 1 and info.value.hint


def test_nvml_init_failure_other_than_absence_is_a_query_error() -> None:
    fake = FakeNvml([], init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)

    with pytest.raises(GpuQueryError) as info:
        NvmlInventory(nvml=fake).read()
    assert not isinstance(info.value, GpuUnavailableError)


def test_nvml_process_that_vanished_keeps_an_empty_name(h200_dir: Path) -> None:
    _, _, lgip = read_capture(h200_dir / "mig-lgip.txt")
    fake = fakes_nvml.from_recorded(
        h200_dir / "busy-nvml.json", profiles=fakes_nvml.profiles_from_lgip(lgip), process_names={}
    )

    (gpu,) = NvmlInventory(nvml=fake).read().gpus

    assert gpu.processes == (GpuProcess(455, 4294, ""),)


def test_nvml_privileged_parent_view_is_not_double_counted() -> None:
    gpu = fakes_nvml.a100_40gb(0, ["1g.5gb"])
    gpu.parent_processes_privileged = True
    assert gpu.mig_slots[0] is not None
    gpu.mig_slots[0].processes = [FakeProcess(9, 100 * MIB)]

    inventory = NvmlInventory(nvml=FakeNvml([gpu], process_names={9: "p"})).read()

    assert inventory.gpus[0].processes == (GpuProcess(9, 100, "p"),)


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    return done.stdout.strip()


def test_importing_and_opening_backends_stays_cheap() -> None:
    out = _python(
        "import sys\n"
        "from ds01.adapters.gpu import open_inventory\n"
        "for spec in ('auto', 'nvml', 'nvidia-smi', 'none'):\n"
        "    open_inventory(spec)\n"
        "print('pynvml' in sys.modules, 'pydantic' in sys.modules)\n"
    )
    assert out == "False False"


def test_gpu_backends_do_not_import_the_factory_or_each_other() -> None:
    # The backends once imported gpu_inventory, which imported them back: a cycle.
    # Each backend may use the domain and the errors, never the factory or a sibling.
    package = PROJECT_ROOT / "src" / "ds01" / "adapters" / "gpu"
    for backend in ("nvml", "smi", "file"):
        tree = ast.parse((package / f"{backend}.py").read_text())
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                # A relative import stays inside ds01.adapters.gpu: also forbidden.
                prefix = "ds01.adapters.gpu." if node.level else ""
                imported.add(prefix + (node.module or ""))
        assert not {m for m in imported if m.startswith("ds01.adapters")}, backend


def test_gpu_unavailable_error_is_a_gpu_query_error() -> None:
    error = GpuUnavailableError("no nvidia-smi")

    assert isinstance(error, GpuQueryError)
    assert error.code == "gpu_unavailable"
    assert error.exit_code == GpuQueryError("x").exit_code == 1


# -- none, auto and open_inventory ---------------------------------------------------------


class Stub:
    def __init__(self, name: str, result: Inventory | Exception) -> None:
        self.name = name
        self.result = result
        self.reads = 0

    def read(self) -> Inventory:
        self.reads += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_none_inventory_is_empty() -> None:
    backend = NoneInventory()
    assert backend.name == "none"
    assert backend.read() == Inventory(gpus=(), devices=(), source="none")


def test_auto_falls_through_unavailable_sources_and_sticks() -> None:
    nvml = Stub("nvml", GpuUnavailableError("no libnvidia-ml"))
    smi = Stub("nvidia-smi", Inventory(source="nvidia-smi"))
    auto = AutoInventory([nvml, smi])
    assert auto.name == "auto"

    assert auto.read().source == "nvidia-smi"
    auto.read()

    assert auto.name == "nvidia-smi" and auto.chosen is smi
    assert (nvml.reads, smi.reads) == (1, 2)
    assert auto.skipped == [("nvml", "no libnvidia-ml")]


def test_auto_does_not_hide_a_real_failure() -> None:
    smi = Stub("nvidia-smi", Inventory(source="nvidia-smi"))
    auto = AutoInventory([Stub("nvml", GpuQueryError("GPU is lost")), smi])

    with pytest.raises(GpuQueryError, match="GPU is lost"):
        auto.read()
    assert smi.reads == 0 and auto.name == "auto"


def test_auto_ends_with_none() -> None:
    auto = AutoInventory(
        [Stub("nvml", GpuUnavailableError("x")), Stub("nvidia-smi", GpuUnavailableError("y"))]
    )

    assert auto.read() == Inventory(source="none")
    assert auto.name == "none"


def test_auto_with_real_backends_on_a_host_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = NvmlInventory(nvml=FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    smi = SmiInventory(run=lambda argv: run_command(["/nonexistent/ds01-test/nvidia-smi"]))
    auto = AutoInventory([nvml, smi])

    assert auto.read().source == "none"
    assert [name for name, _ in auto.skipped] == ["nvml", "nvidia-smi"]


def test_open_inventory_specs(tmp_path: Path) -> None:
    assert isinstance(open_inventory("auto"), AutoInventory)
    assert isinstance(open_inventory(" none "), NoneInventory)
    assert open_inventory("nvml").name == "nvml"
    assert open_inventory("nvidia-smi").name == "nvidia-smi"
    backend = open_inventory(f"file:{tmp_path / 'gpus.json'}")
    assert isinstance(backend, FileInventory)
    assert backend.path == tmp_path / "gpus.json"
    with pytest.raises(ConfigError, match="needs a path"):
        open_inventory("file:")
    with pytest.raises(ConfigError, match="unknown GPU inventory source 'cuda'") as info:
        open_inventory("cuda")
    assert info.value.exit_code == 2 and "file:PATH" in (info.value.hint or "")


# -- the shared device rules ------------------------------------------------------------------


def test_merge_processes_dedupes_by_pid_and_keeps_a_name() -> None:
    merged = merge_processes(
        [GpuProcess(5, 10, ""), GpuProcess(3, None, "a")], [GpuProcess(5, 99, "b")]
    )
    assert merged == (GpuProcess(3, None, "a"), GpuProcess(5, 10, "b"))


def test_devices_for_gpu_rejects_contradictions() -> None:
    gpu = Gpu(index=0, uuid="GPU-x", name="A100", memory_mib=40960, mig_enabled=True)
    with pytest.raises(GpuQueryError, match="slice count is unknown"):
        devices_for_gpu(gpu, [])
    whole = dataclasses.replace(gpu, mig_enabled=False)
    with pytest.raises(GpuQueryError, match="MIG mode is off"):
        devices_for_gpu(whole, [MigInstance("MIG-y", "1g.5gb", 1, 4864)])
    assert [d.equivalents for d in devices_for_gpu(whole)] == [1]


# -- the JSON file ---------------------------------------------------------------------------


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def doc_examples() -> list[dict[str, object]]:
    text = (PROJECT_ROOT / "docs" / "gpu-inventory-file.md").read_text()
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_documented_full_example_reads(tmp_path: Path) -> None:
    full, generated = doc_examples()

    inventory = FileInventory(write(tmp_path / "gpus.json", full)).read()

    assert inventory.source == "file"
    h200, a100 = inventory.gpus
    assert h200.compute_capability == (9, 0) and h200.total_slices == 7
    assert a100.mig_enabled and a100.processes == (GpuProcess(4242, 2000, "python"),)
    assert [(d.label, d.equivalents) for d in inventory.devices] == [
        ("GPU 0", 1),
        ("GPU 1 MIG 3g.20gb", Fraction(3, 7)),
        ("GPU 1 MIG 1g.5gb", Fraction(1, 7)),
        ("GPU 1 MIG 1g.5gb", Fraction(1, 7)),
    ]
    assert inventory.devices[0].processes == (GpuProcess(455, 4294, "python3"),)
    assert inventory.devices[0].utilization_gpu == 100
    assert inventory.devices[1].memory_used_mib == 2048

    stress = FileInventory(write(tmp_path / "stress.json", generated)).read()
    assert len(stress.gpus) == 8 and len(stress.devices) == 56
    assert stress.total_equivalents == 8


def test_generated_stress_inventory_is_deterministic(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gpus.json",
        {
            "generate": {
                "count": 8,
                "name": "NVIDIA A100-SXM4-40GB",
                "memory_mib": 40960,
                "compute_capability": "8.0",
                "total_slices": 7,
                "mig": {"profile": "1g.5gb", "count": 7},
            }
        },
    )

    first = FileInventory(path).read()
    again = FileInventory(path).read()

    assert first == again
    assert len(first.devices) == 56 and len({d.uuid for d in first.devices}) == 56
    assert all(d.equivalents == Fraction(1, 7) for d in first.devices)
    assert [g.index for g in first.gpus] == list(range(8))
    assert first.gpus[3].uuid == simulated_uuid("ds01-sim", 3)
    assert first.devices[0].uuid == simulated_uuid("ds01-sim", 0, 0)
    assert re.fullmatch(r"MIG-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", first.devices[0].uuid)


def test_generate_blocks_mix_with_written_gpus(tmp_path: Path) -> None:
    document = {
        "gpus": [{"index": 4, "uuid": "GPU-h", "name": "NVIDIA H200", "memory_mib": 143771}],
        "generate": [
            {
                "count": 2,
                "name": "NVIDIA A100-SXM4-40GB",
                "memory_mib": 40960,
                "total_slices": 7,
                "mig": [{"profile": "3g.20gb", "count": 1}, {"profile": "1g.5gb", "count": 2}],
            },
            {
                "count": 1,
                "name": "NVIDIA A30",
                "memory_mib": 24576,
                "total_slices": 4,
                "mig": {"profile": "1g.6gb", "count": 0},
            },
            {"count": 1, "name": "NVIDIA L4", "memory_mib": 23034, "seed": "other-host"},
        ],
    }

    inventory = FileInventory(write(tmp_path / "gpus.json", document)).read()

    assert [(g.index, g.name, g.mig_enabled) for g in inventory.gpus] == [
        (4, "NVIDIA H200", False),
        (5, "NVIDIA A100-SXM4-40GB", True),
        (6, "NVIDIA A100-SXM4-40GB", True),
        (7, "NVIDIA A30", True),
        (8, "NVIDIA L4", False),
    ]
    assert [d.gpu_index for d in inventory.devices] == [4, 5, 5, 5, 6, 6, 6, 8]
    assert inventory.total_equivalents == 2 + 2 * Fraction(5, 7)
    assert inventory.gpus[4].uuid == simulated_uuid("other-host", 8)


def test_file_is_read_again_on_every_read(tmp_path: Path) -> None:
    gpu = {"index": 0, "uuid": "GPU-a", "name": "NVIDIA L4", "memory_mib": 23034}
    path = write(tmp_path / "gpus.json", {"gpus": [gpu]})
    backend = FileInventory(path)
    assert backend.read().devices[0].utilization_gpu is None

    write(path, {"gpus": [{**gpu, "utilization_gpu": 97, "processes": [{"pid": 1}]}]})

    device = backend.read().devices[0]
    assert device.utilization_gpu == 97 and device.processes == (GpuProcess(1),)


@pytest.mark.parametrize(
    ("document", "where", "what"),
    [
        (
            {"gpus": [{"index": 0, "uuid": "G", "name": "n", "memory_mib": 1, "colour": "red"}]},
            "gpus[0].colour",
            "Extra inputs",
        ),
        (
            {"gpus": [{"index": 0, "uuid": "G", "name": "n", "memory_mib": "40960"}]},
            "gpus[0].memory_mib",
            "valid integer",
        ),
        (
            {
                "gpus": [
                    {
                        "index": 0,
                        "uuid": "G",
                        "name": "n",
                        "memory_mib": 1,
                        "compute_capability": "9",
                    }
                ]
            },
            "gpus[0].compute_capability",
            "pattern",
        ),
        (
            {
                "gpus": [
                    {
                        "index": 0,
                        "uuid": "G",
                        "name": "n",
                        "memory_mib": 1,
                        "mig_enabled": True,
                        "total_slices": 7,
                        "mig": [{"uuid": "M", "profile": "1g.5gb", "slices": 0}],
                    }
                ]
            },
            "gpus[0].mig[0].slices",
            "greater than or equal to 1",
        ),
        (
            {
                "gpus": [
                    {
                        "index": 0,
                        "uuid": "G",
                        "name": "n",
                        "memory_mib": 1,
                        "mig_enabled": True,
                        "total_slices": 7,
                        "mig": [{"uuid": "M", "profile": "big"}],
                    }
                ]
            },
            "gpus[0].mig[0]",
            "not a MIG profile name",
        ),
        (
            {
                "gpus": [
                    {
                        "index": 0,
                        "uuid": "G",
                        "name": "n",
                        "memory_mib": 1,
                        "mig": [{"uuid": "M", "profile": "1g.5gb"}],
                    }
                ]
            },
            "gpus[0]",
            "mig_enabled is false",
        ),
        (
            {
                "gpus": [
                    {"index": 0, "uuid": "G", "name": "n", "memory_mib": 1, "mig_enabled": True}
                ]
            },
            "gpus[0]",
            "total_slices is required",
        ),
        (
            {
                "gpus": [
                    {
                        "index": 0,
                        "uuid": "G",
                        "name": "n",
                        "memory_mib": 1,
                        "mig_enabled": True,
                        "total_slices": 4,
                        "mig": [
                            {"uuid": "M1", "profile": "4g.24gb"},
                            {"uuid": "M2", "profile": "1g.6gb"},
                        ],
                    }
                ]
            },
            "gpus[0]",
            "use 5 slices but total_slices is 4",
        ),
        (
            {
                "gpus": [
                    {"index": 0, "uuid": "G", "name": "n", "memory_mib": 1},
                    {"index": 0, "uuid": "H", "name": "n", "memory_mib": 1},
                ]
            },
            "(top level)",
            "index 0 is used more than once",
        ),
        (
            {
                "gpus": [
                    {"index": 0, "uuid": "G", "name": "n", "memory_mib": 1},
                    {"index": 1, "uuid": "G", "name": "n", "memory_mib": 1},
                ]
            },
            "(top level)",
            "uuid 'G' is used more than once",
        ),
        (
            {
                "generate": {
                    "count": 1,
                    "name": "n",
                    "memory_mib": 1,
                    "total_slices": 7,
                    "mig": {"profile": "1g.5gb", "count": 8},
                }
            },
            "generate[0]",
            "use 8 slices but total_slices is 7",
        ),
        ([1, 2], "(top level)", "valid dictionary"),
    ],
)
def test_bad_file_names_the_file_and_the_key(
    tmp_path: Path, document: object, where: str, what: str
) -> None:
    path = write(tmp_path / "gpus.json", document)

    with pytest.raises(ConfigError) as info:
        FileInventory(path).read()

    message = info.value.message
    assert message.startswith(f"{path}: {where}: "), message
    assert what in message
    assert info.value.exit_code == 2 and info.value.hint


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text('{\n  "gpus": [\n    {"index": 0,}\n  ]\n}\n')

    with pytest.raises(ConfigError, match=r"gpus\.json: line 3 column"):
        FileInventory(path).read()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read GPU inventory file"):
        FileInventory(tmp_path / "absent.json").read()


def test_file_mig_defaults_come_from_the_profile(tmp_path: Path) -> None:
    document = {
        "gpus": [
            {
                "index": 0,
                "uuid": "G",
                "name": "NVIDIA A100-SXM4-40GB",
                "memory_mib": 40960,
                "mig_enabled": True,
                "total_slices": 7,
                "mig": [
                    {"uuid": "M1", "profile": "3g.20gb"},
                    {"uuid": "M2", "profile": "1c.3g.20gb"},
                ],
            }
        ]
    }

    devices = FileInventory(write(tmp_path / "gpus.json", document)).read().devices

    assert [(d.slices, d.memory_mib) for d in devices] == [(3, 20480), (1, 20480)]
