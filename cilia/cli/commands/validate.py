"""``cilia validate``: check manifests as kubectl (strict) and Cilium 1.18 would, and fix the
tutorial's ``deny:`` mistake. A thin face over :mod:`cilia.k8s.validate` and :mod:`cilia.k8s.fix`;
the work is :mod:`cilia.cli.validating`'s (which the fast path of :mod:`cilia.cli.main` runs too).
"""

from __future__ import annotations

from typing import Annotated

import typer

from cilia.cli.common import Output, OutputOpt
from cilia.cli.validating import (  # noqa: F401 (exit_code, run_fix, show_report, summary: this module's API)
    EXIT_BAD_INPUT,
    EXIT_INVALID,
    EXIT_VALID,
    exit_code,
    run_fix,
    run_validate,
    show_report,
    summary,
)


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate_cmd(
        filename: Annotated[
            list[str],
            typer.Option(
                "-f", "--filename",
                help="File, directory (-R: with its subdirectories) or - for stdin; repeatable.",
            ),
        ],
        output: OutputOpt = Output.text,
        fix: Annotated[
            bool, typer.Option("--fix", help="Print the corrected manifests (deny: → egressDeny …).")
        ] = False,
        write: Annotated[
            bool, typer.Option("--write", help="With --fix: rewrite the files in place.")
        ] = False,
        node_selector_labels: Annotated[
            bool,
            typer.Option(
                "--enable-node-selector-labels",
                help="Judge as an agent with enable-node-selector-labels=true (fromNodes/toNodes allowed).",
            ),
        ] = False,
    ) -> None:
        """Validate policies and objects as kubectl (strict) and Cilium 1.18 would.

        Exit status: 0 valid, 1 invalid, 2 input that could not be read.
        """
        if write and not fix:
            raise typer.BadParameter("--write needs --fix")
        raise typer.Exit(run_validate(filename, str(output), fix, write, node_selector_labels))
