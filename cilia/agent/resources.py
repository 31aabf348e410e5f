"""Names users type for kinds and objects: kubectl's kind aliases and unique name prefixes."""

from __future__ import annotations

import contextlib

from cilia.agent.errors import AgentError
from cilia.store import InvalidKeyError, Kind, ObjectKey, Store

KIND_ALIASES: dict[str, Kind] = {}
for _kind, _aliases in {
    Kind.PODS: ("pod", "pods", "po"),
    Kind.DEPLOYMENTS: ("deployment", "deployments", "deploy"),
    Kind.SERVICES: ("service", "services", "svc"),
    Kind.NAMESPACES: ("namespace", "namespaces", "ns"),
    Kind.CNP: ("cnp", "cnps", "ciliumnetworkpolicy", "ciliumnetworkpolicies"),
    Kind.CCNP: ("ccnp", "ccnps", "ciliumclusterwidenetworkpolicy", "ciliumclusterwidenetworkpolicies"),
    Kind.KNP: ("netpol", "netpols", "networkpolicy", "networkpolicies"),
    Kind.CIDR_GROUPS: ("ccg", "ccgs", "ciliumcidrgroup", "ciliumcidrgroups"),
    Kind.SECRETS: ("secret", "secrets"),
}.items():
    for _a in _aliases:
        KIND_ALIASES[_a] = _kind


class AmbiguousNameError(AgentError, LookupError):
    """A prefix that names more than one object."""

    def __init__(self, kind: Kind, namespace: str, prefix: str, matches: list[str]) -> None:
        super().__init__(f"{kind.value} {prefix!r} in {namespace or 'the cluster'} is ambiguous: "
                         f"{', '.join(sorted(matches))}")
        self.matches = matches


def resolve_kind(text: str) -> Kind | None:
    return KIND_ALIASES.get(text.lower())


def resolve_name(
    store: Store, kind: Kind, namespace: str, name: str, *, prefix: bool = True
) -> ObjectKey | None:
    """The object called ``name``, or the only one whose name starts with it (pods are usually
    named by prefix: ``app-a-`` …); None if there is none, AmbiguousNameError if several.
    ``prefix=False``: the full name only, as kubectl (``delete`` must never pick an object the
    user did not name)."""
    ns = namespace if kind.namespaced else ""
    exact = kind.key(ns, name)
    with contextlib.suppress(InvalidKeyError):  # not a valid name: can still be a prefix
        if store.get(exact) is not None:
            return exact
    if not prefix:
        return None
    listed = store.list(kind, ns if kind.namespaced else None)
    matches = [r.key for r in listed if r.key.name.startswith(name)]
    if len(matches) > 1:
        raise AmbiguousNameError(kind, ns, name, [k.name for k in matches])
    return matches[0] if matches else None
