"""``cilia trace``: can A reach B on a port, and which rule decided it. A thin face over
:mod:`cilia.analyze.trace`."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.analyze.peers import parse_port
from cilia.analyze.trace import render_text, trace
from cilia.cli.commands._analysis import (
    EXIT_FAIL,
    EXIT_OK,
    Files,
    Localhost,
    Mode,
    NoState,
    StateDir,
    guarded,
    load,
    node_dns,
)
from cilia.cli.render import print_json


class Output(StrEnum):
    text = "text"
    json = "json"


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def trace_cmd(
        filename: Files,
        src: Annotated[
            str,
            typer.Option("--from", help="PEER: NS/POD, deployment:NS/NAME, IP, entity:NAME or fqdn:NAME."),
        ],
        dst: Annotated[str, typer.Option("--to", help="PEER, as --from.")],
        port: Annotated[str, typer.Option("--port", help="PORT/PROTO, e.g. 80/TCP, 53/UDP, 8/ICMP (type).")],
        output: Annotated[Output, typer.Option("-o", "--output", help="text | json")] = Output.text,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        state_dir: StateDir = None,
        no_state: NoState = False,
    ) -> None:
        """Trace a flow offline: each side's verdict and the rule that decided it.

        The source's egress and the destination's ingress policy are looked up as the datapath does;
        for a default-deny drop, the policies that turned default deny on are named. toFQDNs rules
        decide on the addresses the node (--state-dir) learned from DNS answers and still holds;
        fqdn:NAME traces to each of NAME's.

        Exit status: 0 allowed, 1 denied, 2 bad input.
        """
        analysis = load(filename, enforcement_mode, allow_localhost, node_dns(state_dir, no_state))
        result = guarded(lambda: trace(analysis, src, dst, parse_port(port)))
        if output is Output.json:
            print_json(result.to_dict())
        else:
            sys.stdout.write(render_text(result))
        raise typer.Exit(EXIT_OK if result.allowed else EXIT_FAIL)
