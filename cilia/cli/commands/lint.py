"""``cilia lint``: pitfalls in policy manifests, with stable rule ids. A thin face over
:mod:`cilia.analyze.lint`; the CI-gate settings (rules on/off, ``--fail-on``, the config file) are
:mod:`cilia.analyze.lintgate`'s."""

from __future__ import annotations

import sys
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode, Options
from cilia.analyze.findings import RULES
from cilia.analyze.lint import lint_result, render_text
from cilia.analyze.lintgate import FailOn, GateConfig, find_config, load_config
from cilia.cli.commands._analysis import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_OK,
    Localhost,
    Mode,
    NodeSelectorLabels,
)
from cilia.cli.progress import analysing
from cilia.cli.render import print_errors, print_json, print_yaml
from cilia.k8s.errors import Error
from cilia.k8s.loader import load_paths


class LintOutput(StrEnum):
    """``-o``: the human text (``table`` is the same), JSON, YAML, or a SARIF 2.1.0 log."""

    text = "text"
    table = "table"
    json = "json"
    yaml = "yaml"
    sarif = "sarif"


def gate_config(config: Path | None, no_config: bool) -> GateConfig:
    """The config file's settings: ``--config FILE``, else the nearest one from the working directory
    upward (none with ``--no-config``)."""
    if no_config:
        return GateConfig()
    return load_config(config if config is not None else find_config())


def register(app: typer.Typer) -> None:
    @app.command("lint")
    def lint_cmd(
        filename: Annotated[
            list[str] | None,
            typer.Option(
                "-f", "--filename", metavar="PATH",
                help="File, directory (-R: with its subdirectories) or - for stdin; repeatable.",
            ),
        ] = None,
        output: Annotated[
            LintOutput, typer.Option("-o", "--output", help="text (or table) | json | yaml | sarif.")
        ] = LintOutput.text,
        disable: Annotated[
            list[str] | None,
            typer.Option("--disable", metavar="IDS", help="Rules not to run, e.g. CL003,CL004; repeatable."),
        ] = None,
        enable: Annotated[
            list[str] | None,
            typer.Option(
                "--enable", metavar="IDS", help="Rules to run although the config file disables them."
            ),
        ] = None,
        fail_on: Annotated[
            FailOn | None,
            typer.Option(
                "--fail-on",
                help="Exit 1 on a finding of this severity or worse: error | warning (default) | never.",
                show_default=False,
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option(
                "--config", metavar="FILE",
                help="Lint settings file (.cilia.yaml, or pyproject.toml with [tool.cilia.lint]); default: "
                "the nearest one from the working directory upward.",
                show_default=False,
            ),
        ] = None,
        no_config: Annotated[bool, typer.Option("--no-config", help="Read no settings file.")] = False,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        node_selector_labels: NodeSelectorLabels = False,
        rules: Annotated[bool, typer.Option("--rules", help="List the lint rules and exit.")] = False,
    ) -> None:
        """Lint policy manifests for pitfalls, with stable rule ids (--rules lists them).

        Fields Cilium does not have, policies that select nothing (judged only where the input has
        workloads), allows shadowed by denies, default deny without DNS, misleading directions, ….
        An object annotated cilia.io/lint-ignore: CL006 (ids, comma-separated, or all) has those
        findings silenced.

        Exit status: 0 nothing at or above --fail-on, 1 findings, 2 input that could not be read.

        Examples:
          cilia lint -f policies/ -R
          cilia lint -f k8s/ -R --exclude charts --disable CL011 --fail-on error
          cilia lint -f k8s/ -R -o sarif > cilia.sarif
        """
        if rules:
            for rule_id, (severity, what) in RULES.items():
                sys.stdout.write(f"{rule_id} {severity}: {what}\n")
            raise typer.Exit(EXIT_OK)
        if not filename:
            raise typer.BadParameter("-f/--filename is required", param_hint="-f")
        try:
            gate = gate_config(config, no_config).overridden(disable or (), enable or (), fail_on)
        except Error as exc:
            print_errors([exc], sys.stderr)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        options = Options(enforcement_mode, allow_localhost, node_selector_labels=node_selector_labels)
        loaded = load_paths(filename)
        with analysing(f"linting {len(loaded.documents)} objects", len(loaded.documents)):
            report = lint_result(loaded, options)
        if report.unreadable:
            print_errors(report.unreadable, sys.stderr)
            raise typer.Exit(EXIT_BAD_INPUT)
        report = replace(report, findings=tuple(f for f in report.findings if gate.active(f.rule)))
        if output is LintOutput.json:
            print_json(report.to_dict())
        elif output is LintOutput.yaml:
            print_yaml(report.to_dict())
        elif output is LintOutput.sarif:
            from cilia import __version__
            from cilia.analyze.sarif import sarif_log

            print_json(sarif_log(report.findings, __version__))
        else:
            sys.stdout.write(render_text(report))
        raise typer.Exit(EXIT_FAIL if gate.fails(report.findings) else EXIT_OK)
