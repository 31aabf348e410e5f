"""``cilia verify``: check expected verdicts (allow/deny) against the policies; fails on any mismatch.
A thin face over :mod:`cilia.analyze.verify`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.analyze.verify import load_expectations, render_text, verify
from cilia.cli.commands._analysis import (
    EXIT_FAIL,
    EXIT_OK,
    Files,
    Localhost,
    Mode,
    NodeSelectorLabels,
    NoState,
    StateDir,
    guarded,
    load,
    node_dns,
)
from cilia.cli.common import Output, OutputOpt
from cilia.cli.render import print_json


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        filename: Files,
        expect: Annotated[
            str,
            typer.Option(
                "--expect",
                help="YAML file: expectations: [{from, to, port, protocol, http?, tls?, expect}].",
            ),
        ],
        output: OutputOpt = Output.text,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        node_selector_labels: NodeSelectorLabels = False,
        state_dir: StateDir = None,
        no_state: NoState = False,
    ) -> None:
        """Verify expected verdicts; each mismatch is printed with its trace.

        Peers are as for trace (fqdn:NAME too: toFQDNs rules decide on what the node at --state-dir
        learned from DNS answers).

        An expectation with ``http: {method, path, host, headers}`` or ``tls: {sni}`` is decided by the
        L7 proxies on the way too: a request a proxy refuses is ``deny``.

        Exit status: 0 all expectations hold, 1 some do not, 2 bad input.
        """
        expectations = guarded(lambda: load_expectations(expect))
        analysis = load(
            filename, enforcement_mode, allow_localhost, node_dns(state_dir, no_state), node_selector_labels
        )
        report = guarded(lambda: verify(analysis, expectations))
        if output is Output.json:
            print_json(report.to_dict())
        else:
            sys.stdout.write(render_text(report))
        raise typer.Exit(EXIT_OK if report.failed == 0 else EXIT_FAIL)
