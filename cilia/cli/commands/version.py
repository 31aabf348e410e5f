"""``cilia version`` (also ``cilia --version``): the program's version, as text or JSON."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import typer

from cilia import __version__
from cilia.cli.common import Output, OutputOpt

CILIUM_SEMANTICS = "1.18"  # the Cilium release whose policy decisions cilia reproduces


def version_info() -> dict[str, Any]:
    """The version as ``-o json`` prints it (``kind`` marks the document)."""
    return {
        "kind": "cilia.io/Version/v1",
        "cilia": __version__,
        "cilium": CILIUM_SEMANTICS,
        "python": platform.python_version(),
    }


def version_text() -> str:
    """The one line ``cilia version`` prints."""
    return f"cilia {__version__} (Cilium {CILIUM_SEMANTICS} semantics, Python {platform.python_version()})"


def register(app: typer.Typer) -> None:
    @app.command("version")
    def version_cmd(
        output: OutputOpt = Output.text,
    ) -> None:
        """Print cilia's version and the Cilium release whose semantics it follows.

        Example: cilia version -o json
        """
        if output is Output.json:
            sys.stdout.write(json.dumps(version_info(), indent=2) + "\n")
        else:
            sys.stdout.write(version_text() + "\n")
