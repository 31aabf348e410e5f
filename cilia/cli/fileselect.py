"""``-R``, ``--exclude`` and ``--strict``: which files and documents a ``-f`` reads, on every command
that has ``-f/--filename``.

:func:`add_file_selection` adds the three options to such a command when it is registered (by
:mod:`cilia.cli.lazy`) and runs the command inside :func:`cilia.k8s.loader.using_selection`, so every
reader below it — validate, lint, the analyses, apply, diff — reads the same files and lists what it
skipped on stderr, without each command passing the choice along.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from cilia.cli.reading import print_skipped, reading

__all__ = ["add_file_selection", "print_skipped"]

PANEL = "Reading files"


def _options(
    recursive: Annotated[
        bool,
        typer.Option(
            "-R",
            "--recursive",
            help="Read the directories given with -f and all their subdirectories (as kubectl -R); "
            "without it, only each directory's own files.",
            rich_help_panel=PANEL,
        ),
    ] = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="GLOB",
            help="Leave out files found in a -f directory whose path below it, name, or a directory "
            "on the way matches GLOB (e.g. '.github', 'charts/*', '*-values.yaml'); repeatable.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse what is otherwise skipped and listed: documents with no kind (CI workflows, "
            "Helm values), non-object documents, empty files, Go/Helm templates.",
            rich_help_panel=PANEL,
        ),
    ] = False,
) -> None:
    pass


_NAMES = ("recursive", "exclude", "strict")


def add_file_selection(command: Any) -> None:
    """Give ``command`` (a click command) the file-selection options if it reads ``-f``."""
    names = {p.name for p in command.params}
    if "filename" not in names or names & set(_NAMES):
        return
    sub = typer.Typer()
    sub.command()(_options)
    command.params.extend(p for p in typer.main.get_command(sub).params if p.name in _NAMES)
    inner = command.callback

    @functools.wraps(inner)
    def run(*args: Any, recursive: bool = False, exclude: Sequence[str] | None = (), strict: bool = False,
            **kwargs: Any) -> Any:
        with reading(recursive, tuple(exclude or ()), strict):
            return inner(*args, **kwargs)

    command.callback = run
