"""Images: lookup by every kind of reference, label-filtered listing, parents and ONBUILD
triggers, and Docker's removal rules, as image_delete / image_build / create use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ds01.errors import DS01Error
from ds01.ports import ContainerEngine
from tests.conformance.conftest import Rig

CONFLICT = ("UsageError", "conflict")


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(DS01Error) as caught:
        call()
    return type(caught.value).__name__, caught.value.code


def test_lookup_by_tag_repo_id_and_id_prefix(rig: Rig, engine: ContainerEngine) -> None:
    made = rig.make_image("a", {"ds01conf.image": rig.prefix, "x": "1"})
    tag = made.tags[0]
    assert made.tags == (tag,)
    assert made.labels == {"ds01conf.image": rig.prefix, "x": "1"}
    assert made.id.startswith("sha256:") and len(made.id) == 71
    assert made.created is not None and made.created.tzinfo is not None
    assert made.user == ""
    for ref in (tag, tag.removesuffix(":latest"), made.id, made.id[7:19]):
        assert engine.image(ref) == made, ref


def test_missing_image_is_none(rig: Rig, engine: ContainerEngine) -> None:
    assert engine.image(f"{rig.prefix}/missing:latest") is None
    assert engine.image(f"{rig.prefix}/missing") is None
    engine.remove_image(f"{rig.prefix}/missing:latest")  # nothing there: success


def test_list_images_by_label(rig: Rig, engine: ContainerEngine) -> None:
    a = rig.make_image("a", {"ds01conf.image": rig.prefix, "ds01conf.role": "a"})
    b = rig.make_image("b", {"ds01conf.image": rig.prefix, "ds01conf.role": "b"})
    mine = f"ds01conf.image={rig.prefix}"
    assert {i.id for i in engine.list_images([mine])} == {a.id, b.id}
    assert [i.id for i in engine.list_images([mine, "ds01conf.role=b"])] == [b.id]
    assert engine.list_images([mine, "ds01conf.role=c"]) == []
    (row,) = engine.list_images([mine, "ds01conf.role=a"])
    assert (row.id, row.tags, row.labels, row.size) == (a.id, a.tags, a.labels, a.size)
    assert a.created is not None
    assert (row.created, row.user) == (a.created.replace(microsecond=0), "")


def test_parents_and_onbuild_triggers(rig: Rig, engine: ContainerEngine) -> None:
    parent = rig.make_image("p", {"ds01conf.image": rig.prefix}, onbuild=["ENV DS01CONF=1"])
    child = rig.make_image("c", {"ds01conf.role": "c"}, parent=parent.tags[0])
    # A child inherits its parent's labels, as FROM does.
    assert child.labels == {"ds01conf.image": rig.prefix, "ds01conf.role": "c"}
    assert len(engine.image_children(parent.id)) == 1
    assert engine.image_children(child.id) == []
    assert engine.onbuild_triggers(parent.tags[0]) == ["ENV DS01CONF=1"]
    assert engine.onbuild_triggers(child.tags[0]) == []
    assert engine.onbuild_triggers(f"{rig.prefix}/missing:latest") == []


def test_remove_one_of_two_tags_only_untags(rig: Rig, engine: ContainerEngine) -> None:
    made = rig.make_image("a", {"ds01conf.image": rig.prefix})
    other = rig.tag(made, "b")
    assert _error(lambda: engine.remove_image(made.id)) == CONFLICT  # several names: force
    engine.remove_image(made.tags[0])
    now = engine.image(made.id)
    assert now is not None and now.tags == (other,)
    engine.remove_image(other)
    assert engine.image(made.id) is None


def test_remove_image_used_by_a_container(rig: Rig, engine: ContainerEngine) -> None:
    made = rig.make_image("a", {"ds01conf.image": rig.prefix})
    tag = made.tags[0]
    spec = rig.spec("a", image=tag)
    engine.create(spec)
    assert _error(lambda: engine.remove_image(tag)) == CONFLICT
    assert _error(lambda: engine.remove_image(made.id)) == CONFLICT
    engine.start(spec.tag)
    assert _error(lambda: engine.remove_image(made.id, force=True)) == CONFLICT
    engine.remove_image(tag, force=True)  # untags; the running container keeps the image
    kept = engine.image(made.id)
    assert kept is not None and kept.tags == ()
    (row,) = engine.list_images([f"ds01conf.image={rig.prefix}"])
    assert (row.id, row.tags) == (made.id, ("<none>:<none>",))
    # The name no longer means the container's image: the list row shows the id.
    (listed,) = engine.list_containers([f"ds01conf={rig.prefix}"])
    assert (listed.image, engine.inspect(spec.tag).info.image) == (made.id, tag)
    engine.remove(spec.tag, force=True)
    engine.remove_image(made.id)
    assert engine.image(made.id) is None


def test_remove_image_used_by_a_stopped_container_with_force(
    rig: Rig, engine: ContainerEngine
) -> None:
    made = rig.make_image("a", {"ds01conf.image": rig.prefix})
    spec = rig.spec("a", image=made.tags[0])
    engine.create(spec)
    engine.remove_image(made.id, force=True)
    assert engine.image(made.id) is None
    assert engine.inspect(spec.tag).image_id == made.id


def test_remove_a_base_image(rig: Rig, engine: ContainerEngine) -> None:
    parent = rig.make_image("p", {"ds01conf.image": rig.prefix, "ds01conf.role": "p"})
    rig.make_image("c", {"ds01conf.role": "c"}, parent=parent.tags[0])
    assert _error(lambda: engine.remove_image(parent.id)) == CONFLICT
    assert _error(lambda: engine.remove_image(parent.id, force=True)) == CONFLICT
    engine.remove_image(parent.tags[0])  # the name goes; the image stays under its child
    kept = engine.image(parent.id)
    assert kept is not None and kept.tags == ()
    assert engine.list_images(["ds01conf.role=p"]) == []  # no longer top-level
