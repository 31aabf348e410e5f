"""``cilia diff``: the connectivity delta between two sets of manifests (files, directories, or the
same path at two git revisions). A thin face over :mod:`cilia.analyze.diff`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.cli.commands._analysis import (
    EXIT_FAIL,
    EXIT_OK,
    Localhost,
    LocalNode,
    Mode,
    NodeSelectorLabels,
    fail,
    load,
)
from cilia.cli.common import DiffOutput


class FailOn(StrEnum):
    any = "any"
    opened = "opened"
    closed = "closed"


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise fail("--git needs the git command") from None
    if done.returncode != 0:
        raise fail(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def export_revision(repo: Path, rev: str, paths: list[str], into: Path) -> list[str]:
    """Write the files under ``paths`` at ``rev`` into ``into`` (git ls-tree / git show, no
    checkout); the exported paths, to be loaded as -f arguments."""
    names = _git(repo, "ls-tree", "-r", "--name-only", "-z", rev, "--", *paths).split(b"\0")
    out = into / rev.replace("/", "_")
    for raw in filter(None, names):
        name = raw.decode()
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(repo, "show", f"{rev}:{name}"))
    found = [str(out / p) for p in paths if (out / p).exists()]
    if not found:
        raise fail(f"nothing under {' '.join(paths)} at git revision {rev}")
    return found


def register(app: typer.Typer) -> None:
    @app.command("diff")
    def diff_cmd(
        paths: Annotated[
            list[str] | None, typer.Argument(help="With --git: the paths in the repository to compare.")
        ] = None,
        filename: Annotated[
            list[str] | None,
            typer.Option("-f", "--filename", help="The old manifests: file, directory or -; repeatable."),
        ] = None,
        against: Annotated[
            list[str] | None,
            typer.Option("--against", help="The new manifests: file or directory; repeatable."),
        ] = None,
        git: Annotated[
            str | None,
            typer.Option(
                "--git",
                help="REV1..REV2 (or REV1...REV2: from their merge base): compare PATHs (after --) "
                "at two revisions of a repository.",
            ),
        ] = None,
        repo: Annotated[Path, typer.Option("--repo", help="The git repository for --git.")] = Path("."),
        output: Annotated[
            DiffOutput, typer.Option("-o", "--output", help="text | json | md | csv | dot | mermaid | html")
        ] = DiffOutput.text,
        fail_on: Annotated[
            FailOn, typer.Option("--fail-on", help="Exit 1 only for: opened | closed | any change.")
        ] = FailOn.any,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        node_selector_labels: NodeSelectorLabels = False,
        local_node: LocalNode = "",
    ) -> None:
        """What changes in who can reach whom: opened, closed, new deciding rule; workloads added/removed.

        Compare -f OLD… --against NEW…, or --git REV1..REV2 -- PATH… (read with git show, no
        checkout). Per (source group, destination group, port class) it lists the flows that open or
        close and those whose deciding rule changes, each with the rule before and after.
        -o html: one self-contained page with the graph (changed edges, the rest on demand) and the matrix.

        Exit status: 0 without changes, 1 with changes (of the --fail-on kind), 2 for bad input.
        """
        from cilia.analyze.diff import RENDERERS, diff

        with tempfile.TemporaryDirectory(prefix="cilia-diff-") as tmp:
            if git is not None:
                if filename or against:
                    raise fail("give either -f OLD --against NEW or --git REV1..REV2 -- PATH")
                if ".." not in git:
                    raise fail(f"--git {git}: give two revisions as REV1..REV2")
                if "..." in git:  # as git diff A...B: from the merge base of A and B (a pull request's view)
                    a, rev2 = git.split("...", 1)
                    rev1 = _git(repo, "merge-base", a or "HEAD", rev2 or "HEAD").decode().strip()
                else:
                    rev1, rev2 = git.split("..", 1)
                where = list(paths or ["."])
                old_files = export_revision(repo, rev1 or "HEAD", where, Path(tmp))
                new_files = export_revision(repo, rev2 or "HEAD", where, Path(tmp))
            else:
                if not filename or not against:
                    raise fail("give the old manifests with -f and the new ones with --against")
                if paths:
                    raise fail(f"unexpected arguments {' '.join(paths)} (paths go after --git REV1..REV2 --)")
                old_files, new_files = filename, against
            old = load(old_files, enforcement_mode, allow_localhost, None, node_selector_labels, local_node)
            new = load(new_files, enforcement_mode, allow_localhost, None, node_selector_labels, local_node)
        result = diff(old, new)
        if output is DiffOutput.html:
            from cilia.analyze.graphpage import render_diff_page

            sys.stdout.write(render_diff_page(result))
        else:
            sys.stdout.write(RENDERERS[output.value](result))
        raise typer.Exit(EXIT_FAIL if result.changed(fail_on.value) else EXIT_OK)
