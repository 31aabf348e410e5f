"""The selector cache: selections by content, incremental identity updates (semantics.md §5.1)."""

from __future__ import annotations

from cilia.identity.labels import Labels
from cilia.identity.selector import Selector
from cilia.policy.selectorcache import SelectionChange, SelectorCache

WEB = Labels.parse(["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"])
DB = Labels.parse(["k8s:app=db", "k8s:io.kubernetes.pod.namespace=default"])
WEB_PROD = Labels.parse(["k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod"])


def test_selections_are_shared_by_content_and_updated_incrementally() -> None:
    cache = SelectorCache({300: WEB, 301: DB})
    web = Selector.from_match({"any.app": "web"})
    assert cache.add_selector(web) == {300}
    assert cache.add_selector(Selector.from_match({"any.app": "web"})) == {300}  # same content
    assert len(cache) == 1
    everyone, nobody = Selector.wildcard(), Selector.none()
    assert cache.selections(everyone) == {300, 301}
    assert cache.selections(nobody) == frozenset()

    changes = cache.update_identities({302: WEB_PROD}, removed=[301])
    assert changes == {
        web: SelectionChange(frozenset({302}), frozenset()),
        everyone: SelectionChange(frozenset({302}), frozenset({301})),
    }
    assert cache.selections(web) == {300, 302}
    assert cache.labels_of(301) is None

    # A label change of an existing identity moves it between selections.
    changes = cache.update_identities({300: DB})
    assert changes == {web: SelectionChange(frozenset(), frozenset({300}))}
    assert cache.selections(web) == {302}


def test_users_and_retain() -> None:
    cache = SelectorCache({300: WEB})
    web = Selector.from_match({"any.app": "web"})
    db = Selector.from_match({"any.app": "db"})
    cache.add_selector(web)
    cache.add_selector(web)
    cache.selections(db)
    cache.remove_selector(web)
    assert web in cache
    cache.retain(set())
    assert web in cache and db not in cache  # web still has a user
    cache.remove_selector(web)
    assert web not in cache
