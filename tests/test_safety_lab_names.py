"""The lab refuses a pod whose namespace or name Kubernetes would refuse, or whose files the
filesystem cannot name, before it creates anything (no namespace, address or record is left)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.lab import netns
from cilia.lab.errors import LabError
from cilia.lab.names import netns_name
from cilia.lab.node import Lab
from cilia.lab.spec import PodSpec
from cilia.store import Kind, open_store


@pytest.mark.parametrize(
    ("namespace", "name"),
    [("..", "agent"), (".", "x"), ("default", "../x"), ("Default", "x"), ("default", "a" * 253),
     ("a" * 63, "b" * 190), ("default", "web\n"), ("default", "a" * 254)],
)  # fmt: skip
def test_refused_before_anything_is_created(tmp_path: Path, namespace: str, name: str) -> None:
    store = open_store(backend="memory")
    lab = Lab(store, run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    with pytest.raises(LabError, match="pod "):
        lab.create_pod(PodSpec(namespace=namespace, name=name))
    assert not netns.exists(netns_name(namespace, name))
    assert store.list(Kind.IPAM) == []
    assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()


def test_a_long_name_that_fits_is_not_refused_by_the_check(tmp_path: Path) -> None:
    lab = Lab(open_store(backend="memory"), run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    lab._check_names(PodSpec(namespace="default", name="a" * 241))  # default_<241>.json: 254 bytes


@pytest.mark.parametrize("name", ["web\n", "../x", "Web", "a" * 41, "-a", ""])
def test_world_host_names_are_refused_before_anything_is_created(tmp_path: Path, name: str) -> None:
    from cilia.lab.world import World, WorldError

    lab = Lab(open_store(backend="memory"), run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    with pytest.raises(WorldError, match="world host name"):
        World(lab).add(name, "198.19.13.10")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("node_name", "ok"), [("node-1", True), ("cilia-node-1", True), ("node-1\n", False),
                                                ("node-١", False), ("node-9", False)])
def test_node_names(node_name: str, ok: bool) -> None:
    from cilia.agent.cluster import SchedulingError, node_for
    from cilia.agent.desired import PodKey

    manifest = {"spec": {"nodeName": node_name}}
    if ok:
        assert node_for(PodKey("default", "p"), manifest, 3) == 1
    else:
        with pytest.raises(SchedulingError):
            node_for(PodKey("default", "p"), manifest, 3)


def test_lookups_never_leave_the_records(tmp_path: Path) -> None:
    from cilia.lab.world import World

    lab = Lab(open_store(backend="memory"), run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    outside = tmp_path / "x.json"
    outside.write_text("{}")
    assert lab.get_pod("..", "../../x") is None and lab.get_pod("default", "a" * 253) is None
    assert World(lab).get("../../x") is None
