"""Checks of names typed on the command line (``-n``), the same as for names in manifests."""

from __future__ import annotations

import typer

from cilia.k8s.names import namespace_errors


def namespace_option(value: str | None) -> str | None:
    """Typer callback for ``-n/--namespace``: a DNS-1123 label, as Kubernetes requires."""
    if value is None:
        return value
    problems = namespace_errors(value)
    if problems:
        raise typer.BadParameter(f"{value!r}: {problems[-1]}")
    return value


def namespaces_option(values: list[str] | None) -> list[str] | None:
    """Typer callback for a repeatable ``-n``."""
    for v in values or ():
        namespace_option(v)
    return values
