"""``cilia lint``: pitfalls in policy manifests, with stable rule ids. A thin face over
:mod:`cilia.analyze.lint`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode, Options
from cilia.analyze.findings import RULES
from cilia.analyze.lint import lint_paths, render_text
from cilia.cli.commands._analysis import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK, Localhost, Mode
from cilia.cli.common import Output, OutputOpt
from cilia.cli.render import print_errors, print_json


def register(app: typer.Typer) -> None:
    @app.command("lint")
    def lint_cmd(
        filename: Annotated[
            list[str] | None,
            typer.Option("-f", "--filename", help="File, directory (recursive) or - for stdin; repeatable."),
        ] = None,
        output: OutputOpt = Output.text,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        rules: Annotated[bool, typer.Option("--rules", help="List the lint rules and exit.")] = False,
    ) -> None:
        """Lint policy manifests for pitfalls, with stable rule ids (--rules lists them).

        Fields Cilium does not have, policies that select nothing, allows shadowed by denies, default
        deny without DNS, misleading directions, ….

        Exit status: 0 no error or warning, 1 findings, 2 input that could not be read.
        """
        if rules:
            for rule_id, (severity, what) in RULES.items():
                sys.stdout.write(f"{rule_id} {severity}: {what}\n")
            raise typer.Exit(EXIT_OK)
        if not filename:
            raise typer.BadParameter("-f/--filename is required", param_hint="-f")
        report = lint_paths(filename, Options(enforcement_mode, allow_localhost))
        if report.unreadable:
            print_errors(report.unreadable, sys.stderr)
            raise typer.Exit(EXIT_BAD_INPUT)
        if output is Output.json:
            print_json(report.to_dict())
        else:
            sys.stdout.write(render_text(report))
        raise typer.Exit(EXIT_FAIL if report.findings else EXIT_OK)
