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
