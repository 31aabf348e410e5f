"""``cilia svc list``: Services as the datapath load-balances them (ClusterIP:port → backends), from
the table the agent keeps. ``cilia get svc`` shows the Service objects with their ClusterIPs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cilia.agent.services import TABLE_NAME, read_table
from cilia.cli.common import OutputStrOpt, RunDirOpt, StateDirOpt, console, node_config
from cilia.cli.nameopts import namespace_option


def register(app: typer.Typer) -> None:
    svc_app = typer.Typer(help="Services as the datapath load-balances them.", no_args_is_help=True)
    app.add_typer(svc_app, name="svc")

    @svc_app.command("list")
    def list_cmd(
        namespace: Annotated[
            str | None, typer.Option("-n", "--namespace", help="Only this one.", callback=namespace_option)
        ] = None,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: OutputStrOpt = "text",
    ) -> None:
        """Each Service port: its ClusterIP frontend and the backends new connections are spread over."""
        cfg = node_config(state_dir, run_dir)
        rows = [r for r in read_table(cfg.endpoints_path.with_name(TABLE_NAME))
                if namespace is None or r["namespace"] == namespace]
        if output == "json":
            print(json.dumps({"items": rows}, sort_keys=True))
            return
        console.print(f"{'SERVICE':<32} {'FRONTEND':<28} BACKENDS")
        for r in rows:
            for p in r["ports"]:
                ip = p.get("clusterIP", r["clusterIP"])  # a dual-stack Service's IPv6 frontend: its own
                front = f"{f'[{ip}]' if ':' in ip else ip}:{p['port']}/{p['protocol']}"
                console.print(f"{r['namespace'] + '/' + r['name']:<32} {front:<28} "
                              f"{', '.join(p['backends']) or '<none>'}")
