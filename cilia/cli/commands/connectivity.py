"""``cilia connectivity``: the reachability matrix of every pod (per identity), world and host, per
port class. A thin face over :mod:`cilia.analyze.connectivity`."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.analyze.connectivity import connectivity, render_html, render_table, write_csv, write_json
from cilia.cli.commands._analysis import Files, Localhost, Mode, load


class Output(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


def register(app: typer.Typer) -> None:
    @app.command("connectivity")
    def connectivity_cmd(
        filename: Files,
        output: Annotated[
            Output, typer.Option("-o", "--output", help="table | json | csv | html")
        ] = Output.table,
        enforcement_mode: Mode = EnforcementMode.DEFAULT,
        allow_localhost: Localhost = AllowLocalhost.ALWAYS,
    ) -> None:
        """Who can reach whom, per port class: pods (grouped by identity), world and host.

        Port classes are the ports and protocols the policies distinguish, plus "other".
        json and csv are streamed; above 100 identity groups table and html summarise (pairs allowed
        per class, groups reached and reaching per group).

        Exit status: 0, or 2 for bad input.
        """
        conn = connectivity(load(filename, enforcement_mode, allow_localhost))
        if output is Output.json:
            write_json(conn, sys.stdout)
        elif output is Output.csv:
            write_csv(conn, sys.stdout)
        elif output is Output.html:
            sys.stdout.write(render_html(conn))
        else:
            sys.stdout.write(render_table(conn))
