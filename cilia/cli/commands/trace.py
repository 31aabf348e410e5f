"""``cilia trace``: can A reach B on a port, and which rule decided it. The options as typer declares
them; what the command does is :mod:`cilia.cli.tracing` (which the fast path runs too)."""

from __future__ import annotations

from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.cli.commands._analysis import (
    Files,
    Localhost,
    LocalNode,
    Mode,
    NodeSelectorLabels,
    NoState,
    StateDir,
)
from cilia.cli.common import Output, OutputOpt
from cilia.cli.nameopts import namespace_option
from cilia.cli.tracing import TraceArgs, run_trace

Namespace = Annotated[
    str | None,
    typer.Option(
        "-n",
        "--namespace",
        metavar="NS",
        help="Namespace of pod/NAME, deploy/NAME, svc/NAME, a bare NAME and of label queries.",
        callback=namespace_option,
    ),
]
AllNamespaces = Annotated[
    bool, typer.Option("-A", "--all-namespaces", help="Label queries select pods in every namespace.")
]


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def trace_cmd(
        filename: Files,
        src: Annotated[
            str | None,
            typer.Option(
                "--from",
                metavar="PEER",
                help="PEER: NS/POD, pod/NAME, deploy/NAME, sts/NAME, ds/NAME (with -n), "
                "deployment:NS/NAME, IP, entity:NAME, node:NAME, fqdn:NAME or cidrgroup:NAME.",
            ),
        ] = None,
        dst: Annotated[
            str | None,
            typer.Option(
                "--to",
                metavar="PEER",
                help="PEER, as --from, or svc/NAME (a Service; its ClusterIP too).",
            ),
        ] = None,
        port: Annotated[
            str | None,
            typer.Option(
                "--port",
                metavar="PORT",
                help="PORT/PROTO (80/TCP, 53/UDP, 8/ICMP type) or a container port name of the "
                "destination pod (http, dns/UDP). Omitted: one verdict per port class.",
            ),
        ] = None,
        from_labels: Annotated[
            str | None,
            typer.Option(
                "--from-labels",
                metavar="LABELS",
                help="Source pods by labels: app=x,team=y (!=, KEY, !KEY too).",
            ),
        ] = None,
        to_labels: Annotated[
            str | None,
            typer.Option("--to-labels", metavar="LABELS", help="Destination pods, as --from-labels."),
        ] = None,
        from_namespace: Annotated[
            str | None,
            typer.Option(
                "--from-namespace",
                metavar="NS",
                help="Namespace of --from-labels.",
                callback=namespace_option,
            ),
        ] = None,
        to_namespace: Annotated[
            str | None,
            typer.Option(
                "--to-namespace",
                metavar="NS",
                help="Namespace of --to-labels.",
                callback=namespace_option,
            ),
        ] = None,
        namespace: Namespace = None,
        all_namespaces: AllNamespaces = False,
        output: OutputOpt = Output.text,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        node_selector_labels: NodeSelectorLabels = False,
        local_node: LocalNode = "",
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

        Peers as kubectl names them (pod/NAME, deploy/NAME, svc/NAME with -n) or by labels
        (--from-labels app=x --from-namespace prod, as cilium policy trace -s takes labels): every
        pod they stand for is traced. --port http looks the name up in each destination pod's
        containerPorts. Without --port: one verdict per port class the policies distinguish (the
        classes of cilia connectivity), each with the rule that decided it; for a Service, one per
        Service port.

        Examples:

          cilia trace -f k8s/ -n prod --from deploy/frontend --to deploy/backend --port 8080/TCP

          cilia trace -f k8s/ --from-labels app=web --from-namespace prod --to entity:world

          cilia trace -f k8s/ --from default/client --to svc/api --port http

        Exit status: 0 allowed (on every port class when --port is omitted), 1 denied (at L4 or by
        a proxy), 2 bad input.
        """
        raise typer.Exit(run_trace(TraceArgs(
            list(filename), src, dst, port, from_labels, to_labels, from_namespace, to_namespace,
            namespace, all_namespaces, output.value, enforcement_mode, allow_localhost,
            node_selector_labels, local_node, state_dir, no_state, http_method, http_path, http_host,
            http_header, tls_sni, dns_query,
        )))  # fmt: skip
