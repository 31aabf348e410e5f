"""The identity-relevant label filter (semantics.md §2.4, Cilium ``pkg/labelsfilter``).

Only identity-relevant labels enter a security identity; the rest are informational and cannot be
selected by policy. Each pattern is a regular expression that must match at the start of the label
key (optionally restricted to one source with ``source:``); ``!`` marks an exclude. A label is kept
when no include pattern is configured and no exclude matches, or when the longest matching include
is longer than the shortest matching exclude.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from cilia.identity.errors import IdentityError
from cilia.identity.labels import Label, Labels
from cilia.k8s.frozen import frozen


class LabelFilterError(IdentityError, ValueError):
    """A label filter pattern that cannot be used."""


# Cilium's default configuration (defaultLabelPrefixCfg), in its order.
DEFAULT_PATTERNS: tuple[str, ...] = (
    "reserved:.*",
    re.escape("io.kubernetes.pod.namespace"),
    re.escape("io.cilium.k8s.namespace.labels"),
    re.escape("app.kubernetes.io"),
    re.escape("io.cilium.k8s.policy.cluster"),
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    "!" + re.escape("statefulset.kubernetes.io/pod-name"),
    "!" + re.escape("apps.kubernetes.io/pod-index"),
    "!" + re.escape("batch.kubernetes.io/job-completion-index"),
    "!" + re.escape("batch.kubernetes.io/controller-uid"),
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    "!pod-template-generation",
    "!pod-template-hash",
    "!controller-revision-hash",
    "!controller-uid",
    "!annotation.*",
    "!etcd_node",
)


@frozen
class LabelPattern:
    """One filter pattern: ``[source:][!]regex``."""

    source: str
    regex: re.Pattern[str]
    exclude: bool

    @classmethod
    def parse(cls, text: str) -> LabelPattern:
        source, sep, prefix = text.partition(":")
        if not sep:
            source, prefix = "", text
        exclude = prefix.startswith("!")
        if exclude:
            prefix = prefix[1:]
        if not prefix:
            raise LabelFilterError(f"label filter pattern {text!r} has an empty prefix")
        try:
            regex = re.compile(prefix)
        except re.error as e:
            raise LabelFilterError(f"label filter pattern {text!r}: {e}") from None
        return cls(source, regex, exclude)

    def match_length(self, label: Label) -> int | None:
        """Length of the match at the start of the key, or None if the pattern does not match."""
        if self.source and self.source != label.source:
            return None
        m = self.regex.match(label.key)
        return None if m is None else m.end()


class LabelFilter:
    """Splits label sets into identity-relevant and informational labels.

    ``extra`` patterns are appended to the defaults (Cilium's ``--labels``); if any of them is an
    include, the filter becomes an allowlist: a label no include matches is dropped."""

    def __init__(self, extra: Sequence[str] = (), *, defaults: Sequence[str] = DEFAULT_PATTERNS) -> None:
        added = tuple(LabelPattern.parse(p) for p in extra if p)
        self.patterns = (*(LabelPattern.parse(p) for p in defaults), *added)
        self.allowlist = any(not p.exclude for p in added)

    def is_relevant(self, label: Label) -> bool:
        included, excluded = 0, 0
        for p in self.patterns:
            n = p.match_length(label)
            if n is None:
                continue
            if p.exclude:
                if excluded == 0 or n < excluded:
                    excluded = n
            elif n > included:
                included = n
        return (not self.allowlist and excluded == 0) or included > excluded

    def split(self, labels: Iterable[Label]) -> tuple[Labels, Labels]:
        """(identity-relevant, informational) labels."""
        keep, info = [], []
        for lb in labels:
            (keep if self.is_relevant(lb) else info).append(lb)
        return Labels(keep), Labels(info)

    def filter(self, labels: Iterable[Label]) -> Labels:
        """Only the identity-relevant labels."""
        return self.split(labels)[0]


DEFAULT_FILTER = LabelFilter()
