"""FQDN selector labels (semantics.md §7): ``toFQDNs`` selects identities labelled ``fqdn:<name or
pattern>``; the DNS proxy gives IPs it saw for a matching name identities with that label."""

from __future__ import annotations

from cilia.identity.labels import SOURCE_FQDN, Label
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
