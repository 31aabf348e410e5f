"""``cilia lint`` as a CI gate: which rules run, what fails the build, and findings silenced in place.

* :class:`GateConfig` — rules turned off (``disable``) or back on (``enable``) and the severity that
  fails the run (``fail-on``), read from a config file and then overridden by flags.
* :func:`find_config` — the nearest ``.cilia.yaml`` (key ``lint:``) or ``pyproject.toml`` with
  ``[tool.cilia.lint]``, searched from the working directory upward (the first directory that has
  either wins; ``.cilia.yaml`` before ``pyproject.toml``).
* :func:`silenced` — the annotation ``cilia.io/lint-ignore: CL006,CL011`` (or ``all``) on an object
  silences those findings on that object only.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cilia.analyze.findings import RULES, Finding, Severity
from cilia.k8s.errors import Error
from cilia.k8s.source import Document

IGNORE_ANNOTATION = "cilia.io/lint-ignore"
CONFIG_FILES = (".cilia.yaml", "pyproject.toml")
_SPLIT = re.compile(r"[\s,]+")


class FailOn(StrEnum):
    """``--fail-on``: the least severe finding that makes ``cilia lint`` exit 1."""

    error = "error"
    warning = "warning"
    never = "never"


def rule_ids(values: Iterable[str], where: str) -> frozenset[str]:
    """Rule ids from flags or a config (``CL003,CL004`` or repeated); an :class:`Error` names an
    unknown one."""
    ids = {part.upper() for v in values for part in _SPLIT.split(str(v)) if part}
    unknown = sorted(ids - set(RULES))
    if unknown:
        raise Error(
            f"unknown lint rule{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            file=where,
            hint="`cilia lint --rules` lists them",
        )
    return frozenset(ids)


@dataclass(frozen=True)
class GateConfig:
    """Rules off, rules on again, and ``fail-on``; ``source`` is the config file read ("" if none)."""

    disable: frozenset[str] = frozenset()
    enable: frozenset[str] = frozenset()
    fail_on: FailOn = FailOn.warning
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def active(self, rule: str) -> bool:
        return rule in self.enable or rule not in self.disable

    def overridden(
        self, disable: Sequence[str] = (), enable: Sequence[str] = (), fail_on: FailOn | None = None
    ) -> GateConfig:
        """The flags over the file: a flag's ``--enable`` beats the file's ``disable`` and vice versa."""
        off, on = rule_ids(disable, "--disable"), rule_ids(enable, "--enable")
        return GateConfig(
            (self.disable - on) | off,
            (self.enable - off) | on,
            fail_on or self.fail_on,
            self.source,
        )

    def fails(self, findings: Iterable[Finding]) -> bool:
        """Whether these findings fail the run."""
        if self.fail_on is FailOn.never:
            return False
        failing = {Severity.ERROR} if self.fail_on is FailOn.error else {Severity.ERROR, Severity.WARNING}
        return any(f.severity in failing for f in findings)


def _section(path: Path) -> dict[str, Any] | None:
    """The ``lint`` settings of a config file (``None``: the file has no cilia section)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Error(f"cannot read: {exc.strerror or exc}", file=str(path), unreadable=True) from exc
    if path.name == "pyproject.toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise Error(f"invalid TOML: {exc}", file=str(path)) from exc
        cilia = data.get("tool", {}).get("cilia")
        if cilia is None:
            return None
        section = cilia.get("lint", {}) if isinstance(cilia, dict) else None
    else:
        from ruamel.yaml import YAML, YAMLError

        try:
            data = YAML(typ="safe").load(text)
        except YAMLError as exc:
            raise Error(f"invalid YAML: {exc}", file=str(path)) from exc
        section = (data or {}).get("lint", {}) if isinstance(data, dict | None) else None
    if not isinstance(section, dict):
        raise Error("the lint settings must be a mapping (disable, enable, fail-on)", file=str(path))
    return section


def find_config(start: Path | None = None) -> Path | None:
    """The nearest config file from ``start`` (default: the working directory) upward."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        for name in CONFIG_FILES:
            candidate = directory / name
            if candidate.is_file() and (name != "pyproject.toml" or _section(candidate) is not None):
                return candidate
    return None


def load_config(path: Path | None) -> GateConfig:
    """The settings of ``path`` (``None``: the defaults)."""
    if path is None:
        return GateConfig()
    section = _section(path) or {}
    where = str(path)
    unknown = sorted(set(section) - {"disable", "enable", "fail-on", "fail_on"})
    if unknown:
        raise Error(f"unknown lint setting {', '.join(unknown)}", file=where,
                    hint="the lint settings are disable, enable and fail-on")

    def ids(key: str) -> frozenset[str]:
        value = section.get(key, [])
        return rule_ids([value] if isinstance(value, str) else list(value), where)

    fail_on = section.get("fail-on", section.get("fail_on", FailOn.warning.value))
    if str(fail_on) not in FailOn.__members__:
        raise Error(f'fail-on: "{fail_on}": use error, warning or never', file=where)
    return GateConfig(ids("disable"), ids("enable"), FailOn(str(fail_on)), where)


def _ignored_rules(doc: Document) -> frozenset[str] | None:
    meta = doc.data.get("metadata") if isinstance(doc.data, dict) else None
    notes = meta.get("annotations") if isinstance(meta, dict) else None
    value = notes.get(IGNORE_ANNOTATION) if isinstance(notes, dict) else None
    if not isinstance(value, str):
        return None
    ids = {p.upper() for p in _SPLIT.split(value) if p}
    return frozenset(RULES) if "ALL" in ids else frozenset(ids)


def _what(doc: Document) -> str:
    return f"{doc.kind}/{doc.namespace}/{doc.name}" if doc.namespace else f"{doc.kind}/{doc.name}"


def silenced(findings: Iterable[Finding], documents: Sequence[Document]) -> list[Finding]:
    """``findings`` less those an object's ``cilia.io/lint-ignore`` annotation names (on that
    object, in that file)."""
    ignores: dict[tuple[str, str], frozenset[str]] = {}
    for doc in documents:
        rules = _ignored_rules(doc)
        if rules:
            key = (doc.file, _what(doc))
            ignores[key] = ignores.get(key, frozenset()) | rules
            if doc.kind in ("CiliumNetworkPolicy", "NetworkPolicy") and not doc.namespace:
                ignores[(doc.file, f"{doc.kind}/default/{doc.name}")] = ignores[key]
    return [f for f in findings if f.rule not in ignores.get((f.file, f.policy), frozenset())]
