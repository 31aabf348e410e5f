"""Output helpers shared by the commands: error rendering, JSON output, summaries.

Plain text only (no colour codes), so that output is stable for golden files and pipes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from cilia.k8s.errors import Error

HINT_INDENT = "    "


def plural(n: int, word: str) -> str:
    """``1 file`` / ``2 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_error(err: Error) -> str:
    """``file:line:col: path: message`` with the hint, if any, indented below."""
    text = str(err)
    if err.hint:
        text += "\n" + "\n".join(HINT_INDENT + line if line else "" for line in err.hint.splitlines())
    return text


def print_errors(errors: Iterable[Error], out: TextIO | None = None) -> None:
    """Write every error (and its hint) as text."""
    stream = out or sys.stdout
    for err in errors:
        stream.write(format_error(err) + "\n")


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Write ``data`` as indented JSON with a trailing newline."""
    stream = out or sys.stdout
    stream.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _literal_blocks(data: Any) -> Any:
    """``data`` with every multi-line string as a ``|`` block (readable fixes and hints)."""
    from ruamel.yaml.scalarstring import LiteralScalarString

    if isinstance(data, dict):
        return {k: _literal_blocks(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_literal_blocks(v) for v in data]
    if isinstance(data, str) and "\n" in data:
        return LiteralScalarString(data)
    return data


def print_yaml(data: Any, out: TextIO | None = None) -> None:
    """Write ``data`` as block-style YAML (keys in the order given), as ``-o yaml`` prints it."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=2, offset=0)
    yaml.dump(_literal_blocks(data), out or sys.stdout)


def print_warnings(warnings: Iterable[str], out: TextIO | None = None) -> None:
    """Write warnings, one a line, prefixed ``warning:`` (stderr by default)."""
    stream = out or sys.stderr
    for w in warnings:
        stream.write(f"warning: {w}\n")
