"""Label selectors over identity label sets (semantics.md §2.2).

A :class:`Selector` is a Kubernetes LabelSelector whose keys are Cilium *extended keys*
``source.key`` (``app`` → ``any.app``, ``k8s:app`` → ``k8s.app``, ``$host`` → ``reserved.host``).
It is a value: frozen, hashable and compared by its normalized, sorted requirements, so it can key
the engine's selector cache. Matching follows Cilium's ``LabelArray.Has/Get``:

* source ``any`` matches a label with that key from any source; a concrete source only its own;
* source ``cidr`` is prefix-aware: ``cidr.10.0.0.0/8`` "has" the label ``cidr:10.1.2.3/32``;
* ``In``/``NotIn``/``Exists``/``DoesNotExist`` as in Kubernetes (``NotIn`` and ``DoesNotExist``
  match when the key is absent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from cilia.identity.errors import IdentityError
from cilia.identity.labels import (
    SOURCE_ANY,
    SOURCE_CIDR,
    SOURCE_RESERVED,
    Label,
    Labels,
    parse_cidr_key,
)

if TYPE_CHECKING:
    from cilia.k8s import api

RESERVED_KEY_PREFIX = "reserved."


class SelectorError(IdentityError, ValueError):
    """A selector that cannot be built (unknown operator, values where none are allowed, …)."""


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


def extended_key(key: str) -> str:
    """The extended form ``source.key`` of a selector key as a user writes it (Cilium's
    ``GetExtendedKeyFrom``): only the first ``:`` separates the source, no source means ``any``,
    ``$x`` and ``reserved.x`` mean source ``reserved``; a trailing ``=value`` is dropped."""
    if key.startswith("$"):
        source, rest = SOURCE_RESERVED, key[1:]
    elif ":" in key:
        source, _, rest = key.partition(":")
    elif key.startswith(RESERVED_KEY_PREFIX):
        source, rest = SOURCE_RESERVED, key[len(RESERVED_KEY_PREFIX) :]
    else:
        source, rest = "", key
    if not source:
        source = SOURCE_ANY
    return f"{source}.{rest.partition('=')[0]}"


def split_extended_key(key: str) -> tuple[str, str]:
    """(source, key) of an extended key: split at the first ``.`` (no ``.``: source ``any``)."""
    if key.startswith("$"):
        return SOURCE_RESERVED, key[1:]
    source, sep, rest = key.partition(".")
    if not sep:
        return SOURCE_ANY, key
    return (source or SOURCE_ANY), rest


def label_extended_key(label: Label) -> str:
    """The extended key that selects exactly this label's source and key."""
    return f"{label.source}.{label.key}"


@dataclass(frozen=True, slots=True, order=True)
class Requirement:
    """One requirement of a selector. ``key`` is an extended key (``k8s.app``); ``values`` are
    sorted and unique, empty for Exists/DoesNotExist."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        op = self.operator
        if not isinstance(op, Operator):
            try:
                op = Operator(op)
            except ValueError:
                raise SelectorError(
                    f"{op!r} is not a valid label selector operator for key {self.key!r} "
                    "(In, NotIn, Exists, DoesNotExist)"
                ) from None
            object.__setattr__(self, "operator", op)
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            if self.values:
                raise SelectorError(f"values set must be empty for {op} (key {self.key!r})")
        elif not self.values:
            raise SelectorError(f"values set must be non-empty for {op} (key {self.key!r})")
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))

    @classmethod
    def equals(cls, key: str, value: str) -> Requirement:
        return cls(key, Operator.IN, (value,))

    @classmethod
    def exists(cls, key: str) -> Requirement:
        return cls(key, Operator.EXISTS)

    @classmethod
    def does_not_exist(cls, key: str) -> Requirement:
        return cls(key, Operator.DOES_NOT_EXIST)

    @property
    def source(self) -> str:
        return split_extended_key(self.key)[0]

    @property
    def label_key(self) -> str:
        return split_extended_key(self.key)[1]

    def matches(self, labels: Labels) -> bool:
        return _compile(self)(labels)

    def __str__(self) -> str:
        source, key = split_extended_key(self.key)
        name = f"{source}:{key}"
        if self.operator is Operator.EXISTS:
            return name
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{name}"
        if self.operator is Operator.IN and len(self.values) == 1:
            return f"{name}={self.values[0]}"
        op = "in" if self.operator is Operator.IN else "notin"
        return f"{name} {op} ({', '.join(self.values)})"


_Matcher = Callable[[Labels], bool]


def _lookup(source: str, key: str) -> Callable[[Labels], str | None]:
    """Cilium's ``Has`` + ``Get`` for one selector key: the value of the first label (by source)
    that the key selects, or None if it selects none."""
    if source == SOURCE_CIDR:
        target = parse_cidr_key(key)
        if target is not None:
            t_version, t_bits = target.version, target.bits
            shift = (32 if t_version == 4 else 128) - t_bits
            t_net = target.addr >> shift

            def get_cidr(labels: Labels) -> str | None:
                # Prefix-aware: a label prefix inside the selector's prefix is "had" by it.
                for version, addr, bits, value in labels.cidr_keys():
                    if version == t_version and bits >= t_bits and addr >> shift == t_net:
                        return value
                return labels.sources_of(key).get(SOURCE_CIDR)

            return get_cidr
    if source == SOURCE_ANY:

        def get_any(labels: Labels) -> str | None:
            found = labels.sources_of(key)
            if not found:
                return None
            if len(found) == 1:
                return next(iter(found.values()))
            return found[min(found)]

        return get_any

    def get_source(labels: Labels) -> str | None:
        return labels.sources_of(key).get(source)

    return get_source


def _compile(req: Requirement) -> _Matcher:
    source, key = split_extended_key(req.key)
    op = req.operator
    if source not in (SOURCE_ANY, SOURCE_CIDR) and op is Operator.IN and len(req.values) == 1:
        # The commonest requirement (a matchLabels entry with a concrete source), fused into one
        # closure because selector matching is the engine's hottest loop.
        (want,) = req.values

        def match_eq(labels: Labels) -> bool:
            return labels.sources_of(key).get(source) == want

        return match_eq
    get = _lookup(source, key)
    if op is Operator.EXISTS:
        return lambda labels: get(labels) is not None
    if op is Operator.DOES_NOT_EXIST:
        return lambda labels: get(labels) is None
    values = frozenset(req.values)
    if op is Operator.IN:

        def match_in(labels: Labels) -> bool:
            value = get(labels)
            return value is not None and value in values

        return match_in

    def match_not_in(labels: Labels) -> bool:
        value = get(labels)
        return value is None or value not in values

    return match_not_in


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector over identities, compared by content (see module docstring).

    ``requirements`` are AND-ed; none at all is the wildcard. ``nothing`` marks the selector that
    matches no identity (:meth:`none`)."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False
    _matchers: tuple[_Matcher, ...] = field(default=(), init=False, repr=False, compare=False)
    _single: _Matcher | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reqs = () if self.nothing else tuple(sorted(set(self.requirements)))
        object.__setattr__(self, "requirements", reqs)
        object.__setattr__(self, "_matchers", tuple(_compile(r) for r in reqs))
        object.__setattr__(self, "_single", self._matchers[0] if len(reqs) == 1 else None)

    def __reduce__(self) -> tuple[type[Selector], tuple[tuple[Requirement, ...], bool]]:
        # The compiled matchers are closures: rebuild them instead of pickling them.
        return (Selector, (self.requirements, self.nothing))

    # ------------------------------------------------------------------ construction

    @classmethod
    def wildcard(cls) -> Selector:
        """Matches every identity."""
        return _WILDCARD

    @classmethod
    def none(cls) -> Selector:
        """Matches no identity."""
        return _NOTHING

    @classmethod
    def from_match(
        cls, match_labels: Mapping[str, str | None] | None = None, requirements: Iterable[Requirement] = ()
    ) -> Selector:
        """From matchLabels (extended keys; each becomes ``In [value]``) and requirements."""
        reqs = [Requirement.equals(k, v or "") for k, v in (match_labels or {}).items()]
        return cls((*reqs, *requirements))

    @classmethod
    def from_labels(cls, labels: Iterable[Label]) -> Selector:
        """The selector requiring each of these labels (source and value) exactly."""
        return cls(tuple(Requirement.equals(label_extended_key(lb), lb.value) for lb in labels))

    @classmethod
    def from_api(cls, sel: api.LabelSelector | None) -> Selector:
        """From a policy's (Endpoint)LabelSelector as written: keys are turned into extended keys
        (§2.2). ``None`` (an omitted selector) is the wildcard, like an empty one."""
        if sel is None:
            return _WILDCARD
        match_labels = {extended_key(k): v for k, v in (sel.match_labels or {}).items()}
        reqs = [
            Requirement(extended_key(e.key), e.operator, tuple(e.values or ()))  # type: ignore[arg-type]
            for e in sel.match_expressions or ()
        ]
        return cls.from_match(match_labels, reqs)

    # ------------------------------------------------------------------ combination

    def and_(self, other: Selector) -> Selector:
        """Both selectors at once (the union of their requirements)."""
        if self.nothing or other.nothing:
            return _NOTHING
        return Selector((*self.requirements, *other.requirements))

    def with_requirement(self, req: Requirement) -> Selector:
        if self.nothing:
            return self
        return Selector((*self.requirements, req))

    def with_match(self, key: str, value: str) -> Selector:
        """Set ``key = value``, replacing any single-value ``In`` requirement on ``key`` (Cilium's
        ``AddMatch`` overwrites the matchLabels entry)."""
        if self.nothing:
            return self
        kept = [
            r
            for r in self.requirements
            if not (r.key == key and r.operator is Operator.IN and len(r.values) == 1)
        ]
        return Selector((*kept, Requirement.equals(key, value)))

    # ------------------------------------------------------------------ inspection

    @property
    def is_wildcard(self) -> bool:
        return not self.nothing and not self.requirements

    def keys(self) -> frozenset[str]:
        """The extended keys this selector mentions."""
        return frozenset(r.key for r in self.requirements)

    def has_key(self, key: str) -> bool:
        return any(r.key == key for r in self.requirements)

    def has_key_prefix(self, prefix: str) -> bool:
        return any(r.key.startswith(prefix) for r in self.requirements)

    def match_values(self, key: str) -> tuple[str, ...] | None:
        """The values ``key`` must take (from a matchLabels entry or an ``In``), or None."""
        for r in self.requirements:
            if r.key == key and r.operator is Operator.IN:
                return r.values
        return None

    def matches(self, labels: Labels) -> bool:
        """True if the identity with these labels is selected."""
        if self._single is not None:
            return self._single(labels)
        if self.nothing:
            return False
        # A plain loop: this is the engine's hottest call, and all() over a generator is slower.
        for m in self._matchers:  # noqa: SIM110
            if not m(labels):
                return False
        return True

    def __str__(self) -> str:
        if self.nothing:
            return "<none>"
        if not self.requirements:
            return "<all>"
        return ", ".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"


_WILDCARD = Selector()
_NOTHING = Selector(nothing=True)
