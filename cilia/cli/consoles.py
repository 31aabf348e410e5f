"""The rich consoles commands print through (``console`` on stdout, ``err_console`` on stderr), made
when first used: importing rich's console costs start-up that commands printing plain text (validate,
lint, trace) need not pay. Imports no typer, so the fast path (:mod:`cilia.cli.fastpath`) prints its
errors exactly as the typer commands do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_CONSOLES: dict[str, Console] = {}


def get(name: str) -> Console:
    """``console`` (stdout) or ``err_console`` (stderr)."""
    if name not in _CONSOLES:
        from rich.console import Console

        _CONSOLES[name] = (
            Console(soft_wrap=True, highlight=False)
            if name == "console"
            else Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)
        )
    return _CONSOLES[name]


def print_error(message: str) -> None:
    """``error: message`` on stderr (``error:`` in red on a terminal; the message as written, [x] and all)."""
    from rich.markup import escape

    get("err_console").print(f"[red]error:[/red] {escape(message)}")
