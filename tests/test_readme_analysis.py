"""The README's transcripts of trace, connectivity and verify are what the commands print: each
shown line, up to a ``...`` line, is the command's output line."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import REPO
from tests.helpers_analyze import run_cli


def _transcripts() -> list[tuple[str, list[str], list[str]]]:
    """(first line, argv, shown output lines) of each README console block of these commands."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        lines = block.splitlines()
        if not lines or not re.match(r"\$ cilia (trace|connectivity|verify) ", lines[0]):
            continue
        command = lines[0]
        i = 1
        while command.endswith("\\"):
            command = command[:-1] + " " + lines[i].strip()
            i += 1
        shown = []
        for line in lines[i:]:
            if line == "..." or line.startswith("$ "):
                break
            shown.append(line)
        found.append((lines[0], shlex.split(command)[2:], shown))
    return found


TRANSCRIPTS = _transcripts()


def test_the_readme_has_them() -> None:
    assert {argv[0] for _, argv, _ in TRANSCRIPTS} >= {"trace", "connectivity", "verify"}


@pytest.mark.parametrize(("first", "argv", "shown"), TRANSCRIPTS, ids=[t[0][:60] for t in TRANSCRIPTS])
def test_readme_transcript_is_printed(first: str, argv: list[str], shown: list[str]) -> None:
    _, out, _ = run_cli(argv)
    assert out.splitlines()[: len(shown)] == shown, first
