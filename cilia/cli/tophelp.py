"""``cilia --help``: the command list, drawn in the layout typer's rich help has, with no library at all.

typer's help renderer imports rich's console, markdown and syntax modules (markdown_it, pygments): most
of what ``cilia --help`` would cost. A usage line, a paragraph and two boxed two-column lists need none
of it. Colours as rich would use them, only on a terminal and without ``NO_COLOR``.
Sub-command help stays typer's.
"""

from __future__ import annotations

import os
import sys
import textwrap

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for `cilia --help`

if TYPE_CHECKING:  # annotations only: `cilia --help` imports neither
    from collections.abc import Sequence
    from typing import TextIO

_BOLD_CYAN, _YELLOW, _BOLD, _DIM, _RESET = "\x1b[1;36m", "\x1b[33m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


def _panel(title: str, rows: Sequence[tuple[str, str]], first: int, width: int, color: bool) -> list[str]:
    """A rounded box titled ``title`` holding rows of (name, text), text wrapped beside the names."""
    dim, bold, reset = (_DIM, _BOLD_CYAN, _RESET) if color else ("", "", "")
    inner = width - 4  # the borders and one space of padding on each side
    text_width = max(inner - first - 2, 10)
    lines = [f"{dim}╭─ {reset}{title}{dim} {'─' * max(width - len(title) - 5, 0)}╮{reset}"]
    for name, text in rows:
        wrapped = textwrap.wrap(text, text_width) or [""]
        for i, part in enumerate(wrapped):
            label = name if i == 0 else ""
            cell = f"{label:<{first}}  {part}"
            pad = " " * max(inner - len(cell), 0)
            shown = f"{bold}{label:<{first}}{reset}  {part}" if label else cell
            lines.append(f"{dim}│{reset} {shown}{pad} {dim}│{reset}")
    lines.append(f"{dim}╰{'─' * (width - 2)}╯{reset}")
    return lines


def render(
    usage: str, help_text: str, commands: Sequence[tuple[str, str]], out: TextIO | None = None
) -> None:
    """Print the usage line, the app's help, the ``-h/--help`` option and the commands."""
    out = out or sys.stdout
    tty = out.isatty()
    if tty:
        import shutil  # (with its compression modules) only to ask a terminal its width

        width = shutil.get_terminal_size((80, 24)).columns
    else:
        width = 80
    color = tty and "NO_COLOR" not in os.environ
    yellow, bold, reset = (_YELLOW, _BOLD, _RESET) if color else ("", "", "")
    first = max(len(name) for name, _ in commands)
    lines = ["", f" {yellow}Usage: {reset}{bold}{usage}{reset}", ""]
    lines += [f" {line}" for line in textwrap.wrap(help_text, width - 2)]
    lines.append("")
    options = [
        ("--version", "Print the version and exit (-o json: as JSON)."),
        ("-h, --help", "Show this message and exit."),
    ]
    lines += _panel("Options", options, first, width, color)
    lines += _panel("Commands", commands, first, width, color)
    out.write("\n".join(line.ljust(width) if not line.strip() else line for line in lines) + "\n")
