"""FQDN selector labels and DNS name matching (semantics.md §7): ``toFQDNs`` selects identities
labelled ``fqdn:<name or pattern>``; the DNS proxy gives the addresses it saw for a matching name
identities with that label (:func:`fqdn_identity_labels`), and lets a pod ask only for names its
DNS rules' ``matchName``/``matchPattern`` match (:func:`name_matches`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.labels import SOURCE_FQDN, Label, Labels
from cilia.identity.selector import Selector


def normalize_fqdn(name: str) -> str:
    """DNS names compare case-insensitively; a trailing dot is dropped."""
    return name.strip().lower().rstrip(".")


def fqdn_label(match_name: str | None = None, match_pattern: str | None = None) -> Label:
    """``fqdn:<matchName>`` (or ``<matchPattern>`` when no name is given), as Cilium's
    ``FQDNSelector.IdentityLabel``, normalized."""
    return Label(SOURCE_FQDN, normalize_fqdn(match_name or match_pattern or ""))


def fqdn_selector(match_name: str | None = None, match_pattern: str | None = None) -> Selector:
    """The selector a ``toFQDNs`` entry stands for."""
    return Selector.from_labels([fqdn_label(match_name, match_pattern)])


@lru_cache(maxsize=4096)
def _pattern_re(pattern: str) -> re.Pattern[str]:
    p = normalize_fqdn(pattern)
    if p == "*":
        # Every name of DNS name characters, and the root, as Cilium's matchpattern "*" (not a
        # name with other bytes, which the proxy shows \DDD-escaped).
        return re.compile(r"(?:[-a-z0-9_]+(?:\.[-a-z0-9_]+)*)?")
    # "*" stands for any run of DNS name characters within a label, as Cilium's matchpattern does.
    return re.compile("".join("[-a-z0-9_]*" if c == "*" else re.escape(c) for c in p))


def name_matches(name: str, pattern: str) -> bool:
    """Does the DNS name match a ``matchName`` / ``matchPattern`` (case-insensitive, no trailing dot)?"""
    return _pattern_re(pattern).fullmatch(normalize_fqdn(name)) is not None


def host_prefix(ip: str) -> str:
    """The host prefix of an address: ``<ip>/32``, or ``<ip>/128`` for IPv6 (an AAAA answer's)."""
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def fqdn_identity_labels(ip: str, names: Iterable[str], sels: Iterable[str]) -> Labels | None:
    """The identity labels of an address known under ``names``: ``fqdn:<selector>`` for each
    toFQDNs selector (of ``sels``) one of the names matches, plus its host prefix's ``cidr:``
    label (/32, IPv6 /128) and world labels; None when no selector matches (the address stays a
    plain world address)."""
    fq = {fqdn_label(p) for p in sels if any(name_matches(n, p) for n in names)}
    return Labels([*fq, *cidr_identity_labels(host_prefix(ip))]) if fq else None
