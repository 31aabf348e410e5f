"""``cilia bpf …``: inspect the kernel datapath's pinned maps, in the shapes of ``cilium bpf …``."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cilia.agent.config import AgentConfig
from cilia.datapath.bpf.pins import NoDatapathError, PinnedMaps, open_pinned
from cilia.policy.types import Direction, Key, Proto

PIN_ROOT_HELP = "bpffs pin directory of the node's maps (default: $CILIA_PIN_ROOT, else the agent's)"
STATE_DIR_HELP = ("Agent state directory; its datapath/ holds the rule cookie table "
                  "(default: $CILIA_STATE_DIR, else the agent's)")
PinRoot = Annotated[str | None, typer.Option("--pin-root", help=PIN_ROOT_HELP)]
StateDir = Annotated[str | None, typer.Option("--state-dir", help=STATE_DIR_HELP)]
Output = Annotated[str, typer.Option("-o", "--output", help="table | json")]


def port_proto(key: Key) -> str:
    """``80/TCP``, ``8-15/TCP``, ``ANY/UDP`` (all ports), ``8/ICMP`` (type) or ``ANY``."""
    if key.proto == 0:
        return "ANY"
    name = Proto(key.proto).name if key.proto in Proto._value2member_map_ else str(key.proto)
    lo, hi = key.port_range
    if key.prefix_len == 0:
        return f"ANY/{name}"
    return f"{lo}/{name}" if lo == hi else f"{lo}-{hi}/{name}"


@contextmanager
def _maps(pin_root: str | None, state_dir: str | None) -> Iterator[PinnedMaps]:
    cfg = AgentConfig.resolve(state_dir=state_dir)  # the same defaults and environment as the agent
    try:
        maps = open_pinned(pin_root or cfg.pin_root, cfg.datapath_state_dir)
    except NoDatapathError as e:
        sys.stderr.write(f"error: {e}\n")
        raise typer.Exit(1) from None
    try:
        yield maps
    finally:
        maps.close()


def _emit(rows: list[dict[str, Any]], columns: list[str], output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if output != "table":
        sys.stderr.write(f"error: unknown output format {output!r} (table | json)\n")
        raise typer.Exit(2)
    table = Table(box=None, pad_edge=False)
    for c in columns:
        table.add_column(c.upper().replace("_", " "))
    for r in rows:
        table.add_row(*(str(r[c]) for c in columns))
    Console(width=200).print(table)


def policy_rows(maps: PinnedMaps, endpoint_id: int | None) -> list[dict[str, Any]]:
    rows = []
    for e in maps.policy.dump(endpoint_id):
        rules = maps.cookies.rules_for(e.cookie)
        rows.append({
            "endpoint": e.endpoint_id,
            "policy": "Deny" if e.deny else "Allow",
            "direction": Direction(e.key.direction).name.capitalize(),
            "identity": e.key.identity if e.key.identity else "ANY",
            "port_proto": port_proto(e.key),
            "proxy_port": e.proxy_port or "NONE",
            "auth_type": e.auth_type or "disabled",
            "prefix": e.key.lpm_prefix,
            "rules": sorted(r.describe() for r in rules) if rules is not None else [f"cookie {e.cookie}"],
        })
    return rows


def register(app: typer.Typer) -> None:
    bpf = typer.Typer(help="Inspect the kernel datapath (pinned eBPF maps).", no_args_is_help=True)
    policy = typer.Typer(help="Policy map.", no_args_is_help=True)
    ipcache = typer.Typer(help="IP cache (prefix → identity).", no_args_is_help=True)
    ct = typer.Typer(help="Connection tracking table.", no_args_is_help=True)
    endpoint = typer.Typer(help="Endpoints map.", no_args_is_help=True)
    metrics = typer.Typer(help="Datapath counters.", no_args_is_help=True)
    lxc = typer.Typer(help="Local endpoints by address (host routing).", no_args_is_help=True)
    for sub, name in ((policy, "policy"), (ipcache, "ipcache"), (ct, "ct"), (endpoint, "endpoint"),
                      (metrics, "metrics"), (lxc, "lxc")):
        bpf.add_typer(sub, name=name)
    app.add_typer(bpf, name="bpf")

    @policy.command("get", help="Policy entries of one endpoint (or all).")
    def policy_get(endpoint_id: Annotated[int | None, typer.Argument(metavar="[EP]")] = None,
                   pin_root: PinRoot = None, state_dir: StateDir = None,
                   output: Output = "table") -> None:
        with _maps(pin_root, state_dir) as maps:
            rows = policy_rows(maps, endpoint_id)
        if output == "table":
            for r in rows:
                r["rules"] = ", ".join(r["rules"])
        _emit(rows, ["endpoint", "policy", "direction", "identity", "port_proto", "proxy_port", "auth_type",
                     "prefix", "rules"], output)

    @ipcache.command("list", help="Prefix → identity entries.")
    def ipcache_list(pin_root: PinRoot = None, state_dir: StateDir = None,
                     output: Output = "table") -> None:
        with _maps(pin_root, state_dir) as maps:
            rows = [{"prefix": e.prefix, "identity": e.identity} for e in maps.ipcache.dump()]
        _emit(rows, ["prefix", "identity"], output)

    @ct.command("list", help="Connection tracking entries (live ones; --all adds expired entries "
                "the agent's garbage collection has not removed yet).")
    def ct_list(pin_root: PinRoot = None, state_dir: StateDir = None,
                output: Output = "table",
                all_entries: Annotated[bool, typer.Option("--all", help="Include expired entries.")] = False,
                ) -> None:
        with _maps(pin_root, state_dir) as maps:
            rows = [{**e._asdict(), "direction": Direction(e.direction).label,
                     "proto": Proto(e.proto).name if e.proto in Proto._value2member_map_ else e.proto,
                     "expires_in_s": round(e.expires_in_s, 1)} for e in maps.ct.dump()
                    if all_entries or e.expires_in_s > 0]
        _emit(rows, ["endpoint_id", "direction", "proto", "src", "sport", "dst", "dport", "expires_in_s",
                     "packets", "bytes"], output)

    @endpoint.command("list", help="Host devices with the datapath: endpoint, identity, flags.")
    def endpoint_list(pin_root: PinRoot = None, state_dir: StateDir = None,
                      output: Output = "table") -> None:
        with _maps(pin_root, state_dir) as maps:
            rows = [{"ifindex": e.ifindex, "ifname": _ifname(e.ifindex), "endpoint_id": e.endpoint_id,
                     "identity": e.identity,
                     "flags": sorted(f.name.lower() for f in type(e.flags) if f in e.flags and f.name)}
                    for e in maps.endpoints.dump()]
        if output == "table":
            for r in rows:
                r["flags"] = ",".join(r["flags"])
        _emit(rows, ["ifindex", "ifname", "endpoint_id", "identity", "flags"], output)

    @lxc.command("list", help="Pod address → host device, endpoint and the MACs host routing writes.")
    def lxc_list(pin_root: PinRoot = None, state_dir: StateDir = None, output: Output = "table") -> None:
        with _maps(pin_root, state_dir) as maps:
            if maps.lxc is None:
                sys.stderr.write("error: no local endpoint map (cilia_lxc) pinned: the node's agent runs "
                                 "a datapath from before it; restart the agent\n")
                raise typer.Exit(1)
            rows = [{"address": e.ip, "ifindex": e.ifindex, "ifname": _ifname(e.ifindex),
                     "endpoint_id": e.endpoint_id, "pod_mac": e.pod_mac, "host_mac": e.host_mac}
                    for e in maps.lxc.dump()]
        _emit(rows, ["address", "ifindex", "ifname", "endpoint_id", "pod_mac", "host_mac"], output)

    @metrics.command("list", help="Packet counters by direction and verdict/reason, lost events.")
    def metrics_list(pin_root: PinRoot = None, state_dir: StateDir = None,
                     output: Output = "table") -> None:
        with _maps(pin_root, state_dir) as maps:
            rows = [r._asdict() for r in maps.metrics.dump()]
        _emit(rows, ["direction", "verdict", "reason", "packets", "bytes"], output)


def _ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return "?"
