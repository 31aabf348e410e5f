"""How a command reads its ``-f`` inputs: the :class:`~cilia.k8s.loader.Selection` made from ``-R``,
``--exclude`` and ``--strict``, listing what it skipped on stderr and drawing progress on a terminal.
Shared by :mod:`cilia.cli.fileselect` (every typer command) and :mod:`cilia.cli.fastpath`; imports no
typer."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cilia.k8s.errors import Skipped


def print_skipped(skipped: Sequence[Skipped]) -> None:
    """One ``skipped: FILE:LINE: reason`` line per skipped document, on stderr."""
    for item in skipped:
        sys.stderr.write(f"skipped: {item}\n")


@contextlib.contextmanager
def reading(recursive: bool, exclude: Sequence[str], strict: bool) -> Iterator[None]:
    """Every manifest read inside the block is selected so (and listed, and shown progressing)."""
    from cilia.cli.progress import FileProgress, wanted
    from cilia.k8s.loader import Selection, using_selection

    progress = FileProgress() if wanted() else None  # a bar on a terminal, nothing when piped
    selection = Selection(recursive, tuple(exclude), strict, notify=print_skipped, progress=progress)
    try:
        with using_selection(selection):
            yield
    finally:
        if progress is not None:
            progress.close()
