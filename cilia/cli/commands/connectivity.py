"""``cilia connectivity``: the reachability matrix of every pod (per identity), world and host, per
port class. A thin face over :mod:`cilia.analyze.connectivity`."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.analyze.connectivity import (
    CELLS_LIMIT,
    View,
    cells_size,
    connectivity,
    deciding_rules,
    identities_of,
    port_classes_of,
    render_table,
    write_csv,
    write_json,
)
from cilia.cli.commands._analysis import (
    Files,
    Localhost,
    LocalNode,
    Mode,
    NodeSelectorLabels,
    fail,
    guarded,
    load,
)
from cilia.cli.nameopts import namespace_option
from cilia.cli.progress import analysing


class Output(StrEnum):
    table = "table"
    text = "text"  # the same as table: the human format's name in the other commands
    json = "json"
    csv = "csv"
    html = "html"


def register(app: typer.Typer) -> None:
    @app.command("connectivity")
    def connectivity_cmd(
        filename: Files,
        output: Annotated[
            Output, typer.Option("-o", "--output", help="table (or text) | json | csv | html")
        ] = Output.table,
        namespace: Annotated[
            str | None,
            typer.Option(
                "-n",
                "--namespace",
                metavar="NS",
                help="Only the pods of this namespace (and the peers that are not pods); also the "
                "namespace of pod/NAME, deploy/NAME and bare names in --from/--to.",
                callback=namespace_option,
            ),
        ] = None,
        all_namespaces: Annotated[
            bool, typer.Option("-A", "--all-namespaces", help="Every namespace (the default).")
        ] = False,
        src: Annotated[
            str | None,
            typer.Option(
                "--from",
                metavar="PEER",
                help="Only rows of this PEER's identities (as trace takes it).",
            ),
        ] = None,
        dst: Annotated[
            str | None, typer.Option("--to", metavar="PEER", help="Only columns of this PEER's identities.")
        ] = None,
        port: Annotated[
            str | None,
            typer.Option(
                "--port",
                metavar="PORT",
                help="Only the port class(es) of this port: 80/TCP, or a port name.",
            ),
        ] = None,
        rules: Annotated[
            bool | None,
            typer.Option(
                "--rules/--no-rules",
                help="-o json: the deciding rule of every cell (default: when there are at most "
                f"{CELLS_LIMIT:,} cells).",
                show_default=False,
            ),
        ] = None,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
        node_selector_labels: NodeSelectorLabels = False,
        local_node: LocalNode = "",
    ) -> None:
        """Who can reach whom, per port class: pods (grouped by identity), world and host.

        Port classes are the ports and protocols the policies distinguish, plus "other".
        json and csv are streamed; above 100 identity groups table summarises (pairs allowed per class,
        groups reached and reaching per group). html is one self-contained page: the graph (namespaces
        as boxes, closed above 150 groups), each edge's trace, and the matrix.

        Rows and columns are also the CIDR prefixes the policies name (toCIDR, fromCIDR, except
        holes; an address has the identity of its longest prefix) and the entities they name
        (kube-apiserver, remote-node, …), so every cell is the verdict cilia trace gives. -o json
        carries each cell's deciding rule (deciding_rules). The text output lists the groups by
        namespace.

        Examples:

          cilia connectivity -f k8s/ -n prod

          cilia connectivity -f k8s/ --from deploy/frontend -n prod --port 443/TCP -o json

        Exit status: 0, or 2 for bad input.
        """
        if namespace is not None and all_namespaces:
            raise fail("-n and -A contradict each other: give one")
        analysis = load(filename, enforcement_mode, allow_localhost, None, node_selector_labels, local_node)
        classes = guarded(lambda: port_classes_of(analysis, port)) if port is not None else None
        view = View(
            namespace,
            guarded(lambda: identities_of(analysis, src, namespace)) if src is not None else None,
            guarded(lambda: identities_of(analysis, dst, namespace)) if dst is not None else None,
        )
        pods = len(analysis.cluster.pods)  # a spinner on a terminal while a big matrix is computed
        with analysing(f"computing the connectivity of {pods} pods", pods):
            conn = connectivity(analysis, classes, view)
        if not conn.rows or not conn.cols:
            raise fail("the filters leave no rows or no columns")
        if output is Output.json:
            size = cells_size(conn)
            if rules or (rules is None and size <= CELLS_LIMIT):
                with analysing(f"finding the deciding rule of {size:,} cells", pods):
                    cells = guarded(lambda: deciding_rules(analysis, conn))
                write_json(conn, sys.stdout, cells)
            else:
                why = "--no-rules" if rules is False else f"{size:,} cells (over {CELLS_LIMIT:,})"
                note = f"{why}: --rules, or narrow with -n/--from/--to/--port"
                write_json(conn, sys.stdout, cells_note=note)
        elif output is Output.csv:
            write_csv(conn, sys.stdout)
        elif output is Output.html:
            from cilia.analyze.graphpage import render_connectivity_page  # the page with the graph

            with analysing(f"drawing the page of {pods} pods", pods):
                page = render_connectivity_page(conn, analysis)
            sys.stdout.write(page)
        else:
            sys.stdout.write(render_table(conn))
