"""``container deploy`` hands its create flags to create unchanged.

A :class:`DeployRequest` is a create request plus how the deploy ends; create (and a
queued request, which stores it) gets a plain :class:`CreateRequest` with every create
flag as given and the interface ``deploy``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ds01.services.container.create import CreateRequest
from ds01.services.container.deploy import DeployRequest


def test_every_create_flag_reaches_create() -> None:
    # A marker per field: a flag that is dropped or mixed up shows in the comparison.
    values = {f.name: f"<{f.name}>" for f in fields(CreateRequest) if f.name != "interface"}
    deploy = DeployRequest(**values, background=True, rebuild=True)  # type: ignore[arg-type]

    made = deploy.create_request()

    assert type(made) is CreateRequest  # no deploy flags in what create stores
    assert made == CreateRequest(**values, interface="deploy")  # type: ignore[arg-type]


def test_a_deploy_is_created_with_the_deploy_interface() -> None:
    made = DeployRequest(name="thesis", cwd=Path("/work")).create_request()

    assert made == CreateRequest(name="thesis", interface="deploy", cwd=Path("/work"))


def test_only_image_and_gpu_flags_count_as_choosing_them() -> None:
    assert not DeployRequest(name="thesis", wait=True, background=True).chooses_image_or_gpu
    assert DeployRequest(name="thesis", gpus=0).chooses_image_or_gpu
    assert DeployRequest(name="thesis", cpu_only=True).chooses_image_or_gpu
