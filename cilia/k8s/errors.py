"""Problems found in manifests: one value type, :class:`Error`, and the :class:`ValidationReport`.

Errors are raised or collected where they are detected and rendered once, at the CLI edge.
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Any

from cilia.k8s.frozen import frozen

_CONTROLS = r"[\x00-\x1f\x7f-\x9f]"  # compiled at the first error shown (re's cache), not at import
# The schema of ``cilia validate -o json``; a new version when a field changes meaning or type.
VALIDATE_REPORT_KIND = "cilia.io/ValidateReport/v1"


def escape_controls(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``): a value from a
    manifest must not move the cursor or recolour the terminal that shows an error about it."""
    return re.sub(_CONTROLS, lambda m: repr(m.group())[1:-1], text)


class K8sError(Exception):
    """Root of every error the k8s layer raises (callers catch this)."""


class Error(K8sError):
    """One problem in a manifest, with everything a user needs to find and fix it.

    ``line``/``column`` are 1-based (0 when unknown). ``path`` is a YAML-style field path such as
    ``spec.egress[0].toPorts[0].ports[0].port`` (empty for whole-document problems). ``unreadable``
    marks input that could not be read at all (missing file, too large, not text), which the CLI
    reports as bad input rather than as an invalid manifest.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str = "",
        line: int = 0,
        column: int = 0,
        path: str = "",
        hint: str | None = None,
        unreadable: bool = False,
    ) -> None:
        message = escape_controls(message)
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.path = escape_controls(path)  # field names come from the manifest too
        self.hint = hint
        self.unreadable = unreadable

    def _key(self) -> tuple[Any, ...]:
        return (self.file, self.line, self.column, self.path, self.message, self.hint, self.unreadable)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Error) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Error({self.location()}: {self.path}: {self.message})"

    def location(self) -> str:
        """``file:line:col`` (parts that are unknown are left out)."""
        parts = [self.file or "<input>"]
        if self.line:
            parts.append(str(self.line))
            if self.column:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by ``cilia validate -o json``."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class ManifestError(Error):
    """Raised when a set of manifests cannot be used because of the errors it carries."""

    def __init__(self, errors: list[Error]) -> None:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(
            first.message + more,
            file=first.file,
            line=first.line,
            column=first.column,
            path=first.path,
            hint=first.hint,
            unreadable=any(e.unreadable for e in errors),
        )
        self.errors = errors


@frozen
class Skipped:
    """A document or file that was read but is not a Kubernetes object (a CI workflow, Helm values or
    template, an empty file): left out, as ``kubectl apply`` would never send it, and listed."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@frozen
class ValidationReport:
    """The outcome of validating a set of files."""

    files: tuple[str, ...]
    objects: int
    errors: tuple[Error, ...]
    warnings: tuple[str, ...] = field(default=())
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def unreadable(self) -> bool:
        """Some input could not be read at all (the CLI's exit code 2)."""
        return any(e.unreadable for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        """``cilia validate -o json``: marked with its schema (:data:`VALIDATE_REPORT_KIND`)."""
        return {
            "kind": VALIDATE_REPORT_KIND,
            "valid": self.valid,
            "files": len(self.files),
            "objects": self.objects,
            "errors": [e.to_dict() for e in self.errors],
            "warnings": list(self.warnings),
            "skipped": [s.to_dict() for s in self.skipped],
        }
