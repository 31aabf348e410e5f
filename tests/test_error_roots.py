"""One exception root per layer: every public exception class a layer defines derives from that
layer's root, so a caller catches one class per layer it calls (each class keeps its builtin base
too — ``ValueError``, ``OSError`` … — so older ``except`` clauses still match)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cilia
from cilia.agent.errors import AgentError
from cilia.datapath.errors import DatapathError
from cilia.identity.errors import IdentityError
from cilia.k8s.errors import K8sError
from cilia.lab.errors import LabError
from cilia.policy.errors import PolicyError
from cilia.proxy.errors import ProxyError
from cilia.store.errors import StoreError

ROOTS: dict[str, type[Exception]] = {
    "k8s": K8sError,
    "store": StoreError,
    "identity": IdentityError,
    "policy": PolicyError,
    "datapath": DatapathError,
    "proxy": ProxyError,
    "agent": AgentError,
    "lab": LabError,
}


def exception_classes(layer: str) -> list[type[BaseException]]:
    """The public exception classes defined in the modules of ``cilia.<layer>``."""
    package = importlib.import_module(f"cilia.{layer}")
    out: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        if info.name.rpartition(".")[2] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                out.append(obj)
    return out


@pytest.mark.parametrize("layer", sorted(ROOTS))
def test_every_exception_of_a_layer_has_its_root(layer: str) -> None:
    classes = exception_classes(layer)
    assert classes, f"cilia.{layer} defines no exception at all?"
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, ROOTS[layer]))
    assert strays == [], f"derive these from {ROOTS[layer].__qualname__}"


def test_the_roots_are_distinct_and_cover_cilia() -> None:
    layers = {m.name for m in pkgutil.iter_modules(cilia.__path__) if m.ispkg}
    assert set(ROOTS) <= layers
    assert len({id(r) for r in ROOTS.values()}) == len(ROOTS)
    for a, ra in ROOTS.items():
        for b, rb in ROOTS.items():
            assert a == b or not issubclass(ra, rb), f"{a}'s root is a kind of {b}'s"
