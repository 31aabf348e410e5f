"""``cilia dns add NAME IP [--ttl N]`` / ``cilia dns list``: A records of the lab's DNS server, a
world host (``dns`` at 198.19.<i>.53, UDP and TCP) that pods query through the agent's DNS proxy
(toFQDNs). ``cilia dns cache``: what the proxy learned (Cilium's ``fqdn cache list``), from the
node's saved state."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cilia.agent.cluster import member_configs
from cilia.agent.fqdn import FqdnState
from cilia.cli.common import (
    OutputStrOpt,
    RunDirOpt,
    StateDirOpt,
    console,
    fail,
    node_config,
    open_node_store,
    print_listing,
)
from cilia.identity.labels import SOURCE_FQDN
from cilia.k8s.names import dns_name_errors
from cilia.lab import dns
from cilia.lab.errors import LabError
from cilia.lab.node_setup import make_lab
from cilia.lab.world import World, check_address
from cilia.proxy.dns.cache import DnsCacheError


def register(app: typer.Typer) -> None:
    dns_app = typer.Typer(help="The lab's DNS server (a world host) and its A records.", no_args_is_help=True)
    app.add_typer(dns_app, name="dns")

    @dns_app.command("add")
    def add_cmd(
        name: Annotated[str, typer.Argument(help="DNS name, e.g. api.example.com.")],
        ip: Annotated[str, typer.Argument(help="IPv4 address in 198.19.0.0/16 (a world host's).")],
        ttl: Annotated[int | None, typer.Option(
            "--ttl", help=f"Seconds the answers for NAME may be cached (default {dns.DEFAULT_TTL}).")] = None,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Add an A record (starting the DNS server, and its world host, on first use)."""
        problems = dns_name_errors(name)
        if problems:  # before anything is started or written
            raise fail(f"invalid DNS name {name!r}: {problems[0]}", 2)
        cfg = node_config(state_dir, run_dir)
        if cfg.datapath == "sim":
            raise fail("this node runs with --datapath sim: there is no network for a DNS server")
        with open_node_store(cfg) as store:
            lab = make_lab(cfg, store)
            try:
                check_address(ip)
                host = dns.ensure(World(lab))
                dns.add_record(lab.run_dir, name, ip, ttl)
            except LabError as e:
                raise fail(str(e)) from e
        shown = dns.read_ttls(dns.ttl_path(lab.run_dir)).get(name.lower().rstrip("."), dns.DEFAULT_TTL)
        console.print(f"{name.rstrip('.')} A {ip} TTL {shown} (server {host.ip})")

    @dns_app.command("list")
    def list_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: OutputStrOpt = "text",
    ) -> None:
        """The A records and the server's address."""
        cfg = node_config(state_dir, run_dir)
        records = dns.read_records(dns.records_path(cfg.lab_run_dir))
        set_ttls = dns.read_ttls(dns.ttl_path(cfg.lab_run_dir))
        ttls = {name: set_ttls.get(name, dns.DEFAULT_TTL) for name in records}
        server = dns.server_address(cfg.node_index)
        print_listing(output, {"server": server, "records": records, "ttl": ttls}, [
            f"server {server}",
            *(f"{name:<40} A {', '.join(addrs)}  TTL {ttls[name]}"
              for name, addrs in sorted(records.items())),
        ])

    @dns_app.command("cache")
    def cache_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: OutputStrOpt = "text",
    ) -> None:
        """What the node's DNS proxy learned: each address, the names it answered for, until when,
        and the toFQDNs selectors that select it (on a cluster set up here, every node's, named)."""
        cfg = node_config(state_dir, run_dir)
        members = member_configs(cfg)  # several nodes: each node's proxy learns for its own pods
        try:
            if members:
                rows = [{"node": m.node_name, **r} for m in members for r in cache_rows(m.state_dir)]
            else:
                rows = cache_rows(cfg.state_dir)
        except DnsCacheError as e:
            raise fail(str(e)) from e
        if output == "json":
            print(json.dumps({"min_ttl": cfg.tofqdns_min_ttl, "entries": rows}, sort_keys=True))
            return
        print(render_cache(rows, cfg.tofqdns_min_ttl), end="")


def cache_rows(state_dir: Path) -> list[dict[str, Any]]:
    """One row per (address, name) of the node's saved DNS cache."""
    state = FqdnState.for_node(state_dir)
    labels = state.load()
    rows = []
    for ip in state.cache.addresses():
        selected = sorted(lb.key for lb in labels.get(ip, ()) if lb.source == SOURCE_FQDN)
        for name, expires in sorted(state.cache.entries[ip].items()):
            when = dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append({"ip": ip, "name": name, "expires": when, "selected_by": selected})
    return rows


def render_cache(rows: list[dict[str, Any]], min_ttl: int) -> str:
    if not rows:
        return f"no learned addresses (min TTL {min_ttl} s)\n"
    nodes = "node" in rows[0]  # rows of several nodes name theirs
    head = (*(("NODE",) if nodes else ()), "ADDRESS", "NAME", "EXPIRES", "SELECTED BY")
    table = [head, *((*((r["node"],) if nodes else ()), r["ip"], r["name"], r["expires"],
                      ", ".join(r["selected_by"]) or "-") for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
             for row in table]
    return "\n".join([*lines, f"(min TTL {min_ttl} s)"]) + "\n"
