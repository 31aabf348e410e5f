"""``cilia verify``: check expected verdicts (allow/deny) against the policies; fails on any mismatch.
A thin face over :mod:`cilia.analyze.verify`."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.analyze.peer_names import expectation_peer
from cilia.analyze.peers import PeerError
from cilia.analyze.verify import PlacedExpectation, load_expectations, render_text, verify
from cilia.cli.commands._analysis import (
    EXIT_FAIL,
    EXIT_OK,
    Files,
    Localhost,
    LocalNode,
    Mode,
    NodeSelectorLabels,
    NoState,
    StateDir,
    fail,
    guarded,
    load,
    node_dns,
)
from cilia.cli.common import Output, OutputOpt
from cilia.cli.nameopts import namespace_option
from cilia.cli.render import print_json


def in_namespace(placed: list[PlacedExpectation], namespace: str | None) -> list[PlacedExpectation]:
    """The expectations with kubectl names (and, with -n, bare names) as PEER arguments."""
    out = []
    for p in placed:
        e = p.expectation
        try:
            update = {"from_": expectation_peer(e.from_, namespace), "to": expectation_peer(e.to, namespace)}
        except PeerError as exc:
            raise PeerError(f"{p.file}:{p.line}: {exc}") from None
        out.append(replace(p, expectation=e.model_copy(update=update)))
    return out


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
        local_node: LocalNode = "",
        state_dir: StateDir = None,
        no_state: NoState = False,
        namespace: Annotated[
            str | None,
            typer.Option(
                "-n",
                "--namespace",
                metavar="NS",
                help="Namespace of pod/NAME, deploy/NAME, svc/NAME and bare names in the expectations.",
                callback=namespace_option,
            ),
        ] = None,
        all_namespaces: Annotated[
            bool,
            typer.Option("-A", "--all-namespaces", help="Names keep their own namespaces (the default)."),
        ] = False,
    ) -> None:
        """Verify expected verdicts; each mismatch is printed with its trace.

        Peers are as for trace (fqdn:NAME too: toFQDNs rules decide on what the node at --state-dir
        learned from DNS answers).

        An expectation with ``http: {method, path, host, headers}`` or ``tls: {sni}`` is decided by the
        L7 proxies on the way too: a request a proxy refuses is ``deny``.

        from/to take kubectl names too (pod/NAME, deploy/NAME, svc/NAME, sts/NAME, ds/NAME), in the
        namespace of -n (default: default), which bare names then take as well. Without port, an
        expectation is about every port class the policies distinguish (allow or deny on each).

        Examples:

          cilia verify -f k8s/ --expect expectations.yaml

          cilia verify -f k8s/ -n prod --expect prod-expectations.yaml -o json

        Exit status: 0 all expectations hold, 1 some do not, 2 bad input.
        """
        if namespace is not None and all_namespaces:
            raise fail("-n and -A contradict each other: give one")
        expectations = guarded(lambda: in_namespace(load_expectations(expect), namespace))
        analysis = load(
            filename,
            enforcement_mode,
            allow_localhost,
            node_dns(state_dir, no_state),
            node_selector_labels,
            local_node,
        )
        report = guarded(lambda: verify(analysis, expectations))
        if output is Output.json:
            print_json(report.to_dict())
        else:
            sys.stdout.write(render_text(report))
        raise typer.Exit(EXIT_OK if report.failed == 0 else EXIT_FAIL)
