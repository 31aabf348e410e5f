"""``cilia trace``: can A reach B on a port, and which rule decided it. A thin face over
:mod:`cilia.analyze.trace`."""

from __future__ import annotations

import sys
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
    fail,
    guarded,
    load,
    node_dns,
)
from cilia.cli.common import Output, OutputOpt
from cilia.cli.render import print_json
from cilia.policy.l7 import L7Request


def l7_request(
    method: str | None,
    path: str | None,
    host: str | None,
    headers: list[str] | None,
    sni: str | None,
    dns: str | None = None,
) -> L7Request | None:
    """The request the --http-*/--tls-sni/--dns-query options describe (None: none given); a
    header is ``NAME:VALUE`` (spaces after the colon are dropped)."""
    if not (method or path or host or headers or sni is not None or dns):
        return None
    parsed: dict[str, str] = {}
    for h in headers or ():
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise fail(f"--http-header {h!r}: expected NAME:VALUE")
        parsed[name.strip()] = value.strip()
    return L7Request(method or "", path or "", host or "", parsed, sni, dns)


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def trace_cmd(
        filename: Files,
        src: Annotated[
            str,
            typer.Option("--from", help="PEER: NS/POD, deployment:NS/NAME, IP, entity:NAME or fqdn:NAME."),
        ],
        dst: Annotated[
            str,
            typer.Option("--to", help="PEER, as --from, or svc:NS/NAME (a Service; its ClusterIP too)."),
        ],
        port: Annotated[str, typer.Option("--port", help="PORT/PROTO, e.g. 80/TCP, 53/UDP, 8/ICMP (type).")],
        output: OutputOpt = Output.text,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        state_dir: StateDir = None,
        no_state: NoState = False,
        http_method: Annotated[
            str | None, typer.Option("--http-method", help="Decide this HTTP request (method, default GET).")
        ] = None,
        http_path: Annotated[
            str | None, typer.Option("--http-path", help="HTTP request path, query included (default /).")
        ] = None,
        http_host: Annotated[str | None, typer.Option("--http-host", help="HTTP Host (authority).")] = None,
        http_header: Annotated[
            list[str] | None, typer.Option("--http-header", help="NAME:VALUE request header (repeatable).")
        ] = None,
        tls_sni: Annotated[
            str | None, typer.Option("--tls-sni", help="Decide a TLS connection with this server name.")
        ] = None,
        dns_query: Annotated[
            str | None, typer.Option("--dns-query", help="Decide a DNS query for this name (DNS rules).")
        ] = None,
    ) -> None:
        """Trace a flow offline: each side's verdict and the rule that decided it.

        The source's egress and the destination's ingress policy are looked up as the datapath does;
        for a default-deny drop, the policies that turned default deny on are named. toFQDNs rules
        decide on the addresses the node (--state-dir) learned from DNS answers and still holds;
        fqdn:NAME traces to each of NAME's. A Service destination (svc:NS/NAME, or its ClusterIP,
        with the Service's port) is translated to each backend on its target port first, as the
        datapath does: one flow per backend, denied if any backend is (or if there is none).

        When a side's entry sends the connection to an L7 proxy (HTTP rules, serverNames), the
        request given with --http-method/--http-path/--http-host/--http-header or --tls-sni is
        decided as the proxy would, naming the rule; without one the verdict is the L4 one and the
        output names the L7 rules that apply.

        Exit status: 0 allowed, 1 denied (at L4 or by a proxy), 2 bad input.
        """
        request = l7_request(http_method, http_path, http_host, http_header, tls_sni, dns_query)
        analysis = load(filename, enforcement_mode, allow_localhost, node_dns(state_dir, no_state))
        result = guarded(lambda: trace(analysis, src, dst, parse_port(port), request))
        if output is Output.json:
            print_json(result.to_dict())
        else:
            sys.stdout.write(render_text(result))
        raise typer.Exit(EXIT_OK if result.allowed else EXIT_FAIL)
