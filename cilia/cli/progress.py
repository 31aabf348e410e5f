"""Progress on long work, drawn only on a terminal: a transient rich progress bar on stderr while many
manifest files are read or a starting agent creates many pods, a spinner while many objects are
analysed (nothing at all when stderr is piped or redirected, so output stays clean)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

MIN_FILES = 20  # fewer files read in a blink: no bar
MIN_OBJECTS = 200  # an analysis of fewer objects takes well under a second: no spinner
MIN_PODS = 10  # a node starting with fewer pods to create is ready in a blink: no bar


def wanted(stream: Any = None) -> bool:
    """Progress is drawn on ``stream`` (default stderr): a terminal that is not ``TERM=dumb``."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


class FileProgress:
    """A callable for :attr:`cilia.k8s.loader.Selection.progress`: the bar appears once ``MIN_FILES``
    or more files are to be read and goes away when the last one is."""

    def __init__(self, console: Any = None) -> None:
        self._console = console
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int, file: str) -> None:
        if self._bar is None:
            if total < MIN_FILES or done >= total:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            console = self._console or Console(stderr=True)
            self._bar = Progress(
                TextColumn("reading manifests"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.description}"), console=console, transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total)
        name = PurePath(file).name
        self._bar.update(self._task, completed=done, description=name if len(name) <= 40 else name[:39] + "…")
        if done >= total:
            self.close()

    def close(self) -> None:
        """Take the bar away (also when reading stopped early)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class PodProgress:
    """A callable for :func:`cilia.agent.process.start_background`'s ``progress``: a bar of the pods
    the starting agent reports created (``pods_created`` of ``pods_to_create``, one step per pod it
    made), once ``MIN_PODS`` or more are to be created. Draws on ``console`` (default stderr) only:
    give it only where :func:`wanted` says so."""

    def __init__(self, console: Any = None, node: str = "") -> None:
        self._console = console
        self._label = f"{node}: creating pods" if node else "creating pods"
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, status: dict[str, Any]) -> None:
        done, total = int(status.get("pods_created", 0)), int(status.get("pods_to_create", 0))
        if self._bar is None:
            if total < MIN_PODS or done >= total:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(self._label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=self._console or Console(stderr=True), transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        """Take the bar away (the agent is ready, or failed)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextlib.contextmanager
def analysing(what: str, size: int, console: Any = None) -> Iterator[None]:
    """A spinner saying ``what`` while the block runs, on a terminal and for ``size`` ≥ ``MIN_OBJECTS``."""
    if size < MIN_OBJECTS or (console is None and not wanted()):
        yield
        return
    from rich.console import Console

    with (console or Console(stderr=True)).status(what):
        yield
