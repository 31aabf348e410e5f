"""The repository: rules by resource and namespace, with a revision counter."""

from __future__ import annotations

from cilia.identity.selector import Selector
from cilia.policy.repository import Repository, RepositoryChange, ResourceKey
from cilia.policy.rules import PolicyRule
from cilia.policy.types import RuleRef


def rule(kind: str, ns: str, name: str, spec: int = 0) -> PolicyRule:
    return PolicyRule(RuleRef(kind, ns, name, "", -1, spec), ns, Selector.wildcard(), False, ())


def test_replace_delete_and_namespace_index() -> None:
    repo = Repository()
    cnp = ResourceKey("CiliumNetworkPolicy", "default", "a")
    ccnp = ResourceKey("CiliumClusterwideNetworkPolicy", "", "c")
    a0, a1 = rule(*cnp, 0), rule(*cnp, 1)
    c0 = rule(*ccnp)
    assert repo.replace(cnp, [a0, a1]) == RepositoryChange((), (a0, a1), 2)
    repo.replace(ccnp, [c0])
    assert list(repo.candidates("default")) == [c0, a0, a1]  # cluster-wide first
    assert list(repo.candidates("prod")) == [c0]
    assert list(repo.candidates("")) == [c0]
    a0b = rule(*cnp, 0)
    assert repo.replace(cnp, [a0b]) == RepositoryChange((a0, a1), (a0b,), 4)
    assert repo.get(cnp) == (a0b,)
    assert repo.delete(cnp) == RepositoryChange((a0b,), (), 5)
    assert list(repo.candidates("default")) == [c0]
    assert repo.resources() == [ccnp] and len(repo) == 1
    assert repo.delete(cnp) == RepositoryChange((), (), 6)  # deleting twice is harmless
