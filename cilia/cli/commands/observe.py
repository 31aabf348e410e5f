"""``cilia observe``: the node's flows (policy verdicts naming the rule), filtered like ``hubble observe``.

Reads the running agent's flow ring (``GET /v1/flows``) when an agent answers, else the durable flow
log in the state directory (``--from-log`` forces the log). On a cluster set up here (``cilia up
--nodes N``) it reads every node, as hubble does through Hubble Relay: each node's agent, or the
flow log of a node whose agent does not answer (said on stderr), merged in time order
(:mod:`cilia.observe.relay`); ``--node-name`` picks nodes, ``--print-node-name`` names them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperOption

from cilia.cli.common import RunDirOpt, StateDirOpt, err_console, fail, node_config
from cilia.cli.nameopts import namespaces_option
from cilia.observe import render as rnd
from cilia.observe.filters import FilterError, FilterSet, FlowFilter
from cilia.observe.flow import Flow
from cilia.observe.relay import DEFAULT_WINDOW_NS, Relay, node_matches
from cilia.observe.source import feeds_for

Multi = list[str] | None
POLL_S = 0.2


# FlowFilter.build keyword ← the flag; the flags ``--not`` may precede (hubble's filter flags)
FILTER_FLAGS = {
    "--verdict": "verdicts", "--from-pod": "from_pods", "--to-pod": "to_pods", "--pod": "pods",
    "--namespace": "namespaces", "-n": "namespaces", "--from-label": "from_labels", "--to-label": "to_labels",
    "--protocol": "protocols", "--type": "types", "--port": "ports", "--http-method": "http_methods",
    "--http-path": "http_paths", "--http-status": "http_statuses", "--http-url": "http_urls",
    "--ip": "ips", "--from-ip": "from_ips", "--to-ip": "to_ips", "--identity": "identities",
    "--from-identity": "from_identities", "--to-identity": "to_identities",
    "--traffic-direction": "directions", "--drop-reason-desc": "drop_reasons", "--tcp-flags": "tcp_flags",
    "--fqdn": "fqdns", "--from-fqdn": "from_fqdns", "--to-fqdn": "to_fqdns",
    "--workload": "workloads", "--from-workload": "from_workloads", "--to-workload": "to_workloads",
    "--service": "services", "--from-service": "from_services", "--to-service": "to_services",
}  # fmt: skip


class _OrderedCommand(TyperCommand):
    """Keeps the raw arguments: ``--not`` negates the filter flag right after it, an order click
    does not keep across options."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        ctx.meta["cilia.raw_args"] = list(args)
        return super().parse_args(ctx, args)


Values = dict[str, list[str]]


def split_negated(args: list[str], takes_value: set[str]) -> tuple[Values, Values]:
    """The filter flags' values in ``args``: (kept, negated), each ``build keyword → values``. A
    ``--not`` applies to the one filter flag after it, as in hubble; two in a row, or one before
    anything but a filter flag, is an error."""
    kept: Values = {}
    negated: Values = {}
    pending = False
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            break
        if tok == "--not":
            if pending:
                raise FilterError("consecutive --not statements")
            pending = True
            i += 1
            continue
        name, eq, value = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        if name in FILTER_FLAGS:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            (negated if pending else kept).setdefault(FILTER_FLAGS[name], []).append(value)
            pending = False
        elif pending:
            raise FilterError(f"--not must come right before a filter flag, not {tok}")
        elif name in takes_value and not eq:
            i += 1  # that option's value
        i += 1
    if pending:
        raise FilterError("--not at the end: it negates the filter flag after it")
    return kept, negated


class _Writer:
    """Prints flows as they come; ``-o dict`` separates blocks, also across polls."""

    def __init__(self, output: str, node_names: bool) -> None:
        self.output, self.node_names, self.count = output, node_names, 0

    def __call__(self, flows: Iterable[Flow]) -> None:
        for f in flows:
            if self.output == "dict" and self.count:
                sys.stdout.write(rnd.DICT_SEPARATOR + "\n")
            sys.stdout.write(rnd.line(f, self.output, self.node_names) + "\n")
            self.count += 1
        sys.stdout.flush()


def _report(relay: Relay) -> None:
    for state in relay.take_changes():
        err_console.print(f"note: {state.describe()}")


def register(app: typer.Typer) -> None:
    @app.command("observe", cls=_OrderedCommand)
    def observe_cmd(
        ctx: typer.Context,
        verdict: Annotated[Multi, typer.Option("--verdict", help="FORWARDED | DROPPED | AUDIT")] = None,
        from_pod: Annotated[
            Multi, typer.Option("--from-pod", help="[NS/]NAME (a name prefix is enough)")
        ] = None,
        to_pod: Annotated[Multi, typer.Option("--to-pod", help="[NS/]NAME (a name prefix is enough)")] = None,
        pod: Annotated[Multi, typer.Option("--pod", help="[NS/]NAME on either side")] = None,
        namespace: Annotated[
            Multi,
            typer.Option("--namespace", "-n", help="Namespace of either side", callback=namespaces_option),
        ] = None,
        from_label: Annotated[Multi, typer.Option("--from-label", help="key=value of the source")] = None,
        to_label: Annotated[Multi, typer.Option("--to-label", help="key=value of the destination")] = None,
        protocol: Annotated[
            Multi, typer.Option("--protocol", help="tcp | udp | sctp | icmp | icmpv6 | dns | http")
        ] = None,
        type_: Annotated[
            Multi, typer.Option("--type", help="l7 (DNS lookups, HTTP requests) | drop | policy-verdict")
        ] = None,
        http_method: Annotated[Multi, typer.Option("--http-method", help="HTTP method (GET, POST …)")] = None,
        http_path: Annotated[Multi, typer.Option("--http-path", help="Regex found in the HTTP path")] = None,
        http_status: Annotated[
            Multi, typer.Option("--http-status", help="HTTP status code or prefix (403, 5+)")
        ] = None,
        http_url: Annotated[Multi, typer.Option("--http-url", help="Regex found in the HTTP URL")] = None,
        port: Annotated[Multi, typer.Option("--port", help="Source or destination port")] = None,
        ip: Annotated[Multi, typer.Option("--ip", help="Source or destination address or CIDR")] = None,
        from_ip: Annotated[Multi, typer.Option("--from-ip", help="Source address or CIDR")] = None,
        to_ip: Annotated[Multi, typer.Option("--to-ip", help="Destination address or CIDR")] = None,
        identity: Annotated[Multi, typer.Option(
            "--identity", help="Source or destination identity: a number or a reserved name (world)")] = None,
        from_identity: Annotated[Multi, typer.Option("--from-identity", help="Source identity")] = None,
        to_identity: Annotated[Multi, typer.Option("--to-identity", help="Destination identity")] = None,
        traffic_direction: Annotated[Multi, typer.Option(
            "--traffic-direction", help="ingress | egress")] = None,
        drop_reason_desc: Annotated[Multi, typer.Option(
            "--drop-reason-desc", help="POLICY_DENIED | POLICY_DENY | AUTH_REQUIRED | …")] = None,
        tcp_flags: Annotated[Multi, typer.Option(
            "--tcp-flags", help="SYN, or SYN,ACK: all of them set")] = None,
        fqdn: Annotated[Multi, typer.Option(
            "--fqdn", help="A DNS name (or *.pattern) the node learned for either side")] = None,
        from_fqdn: Annotated[Multi, typer.Option("--from-fqdn", help="A DNS name of the source")] = None,
        to_fqdn: Annotated[Multi, typer.Option("--to-fqdn", help="A DNS name of the destination")] = None,
        workload: Annotated[Multi, typer.Option(
            "--workload", help="[KIND/]NAME of either side's owner (Deployment/app-a)")] = None,
        from_workload: Annotated[Multi, typer.Option(
            "--from-workload", help="[KIND/]NAME of the source's owner")] = None,
        to_workload: Annotated[Multi, typer.Option(
            "--to-workload", help="[KIND/]NAME of the destination's owner")] = None,
        service: Annotated[Multi, typer.Option(
            "--service", help="[NS/]NAME of a Service on either side (its ClusterIP, or the Service a "
            "translated connection was addressed to)")] = None,
        from_service: Annotated[Multi, typer.Option(
            "--from-service", help="[NS/]NAME of the Service whose ClusterIP the source is")] = None,
        to_service: Annotated[Multi, typer.Option(
            "--to-service", help="[NS/]NAME of the Service the connection was addressed to")] = None,
        not_: Annotated[bool, typer.Option(
            "--not", help="Leave out the flows the next filter flag matches")] = False,
        first: Annotated[int | None, typer.Option("--first", help="Only the oldest N matching flows")] = None,
        since: Annotated[str | None, typer.Option(help="5m, 1h30m or an RFC 3339 time")] = None,
        until: Annotated[str | None, typer.Option(help="5m, 1h30m or an RFC 3339 time")] = None,
        last: Annotated[int | None, typer.Option("--last", help="Only the newest N matching flows")] = None,
        node_name: Annotated[
            Multi, typer.Option("--node-name", help="Only flows seen by this node (a glob: node-*)")
        ] = None,
        print_node_name: Annotated[
            bool, typer.Option("--print-node-name", help="Name the node that saw each flow")
        ] = False,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new flows")] = False,
        output: Annotated[str, typer.Option(
            "-o", "--output", help="compact | dict | json | jsonpb | table")] = "compact",
        from_log: Annotated[
            bool, typer.Option("--from-log", help="Read the flow log even if an agent runs")
        ] = False,
        follow_for: Annotated[float | None, typer.Option("--follow-for", hidden=True)] = None,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Show flows: each drop and each allowed new connection, with the rule that decided.

        On a cluster set up here (cilia up --nodes N), every node's flows, merged in time order."""
        if output not in rnd.FORMATS:
            raise fail(f"unknown output format {output!r} ({', '.join(rnd.FORMATS)})", 2)
        if follow and output == "table":
            raise fail("--follow prints flows as they come: use -o compact, dict, json or jsonpb", 2)
        if first is not None and (last is not None or follow):
            raise fail("--first cannot be combined with --last or --follow", 2)
        takes_value = {o for prm in ctx.command.params if isinstance(prm, TyperOption) and not prm.is_flag
                       for o in prm.opts}
        try:
            kept, negated = split_negated(ctx.meta.get("cilia.raw_args", []), takes_value)
            if not negated:  # no --not: the parsed values (also when called without raw arguments)
                kept = {k: list(v) for k, v in {
                    "verdicts": verdict, "from_pods": from_pod, "to_pods": to_pod, "pods": pod,
                    "namespaces": namespace, "from_labels": from_label, "to_labels": to_label,
                    "protocols": protocol, "types": type_, "ports": port, "http_methods": http_method,
                    "http_paths": http_path, "http_statuses": http_status, "http_urls": http_url,
                    "ips": ip, "from_ips": from_ip, "to_ips": to_ip, "identities": identity,
                    "from_identities": from_identity, "to_identities": to_identity,
                    "directions": traffic_direction, "drop_reasons": drop_reason_desc, "tcp_flags": tcp_flags,
                    "fqdns": fqdn, "from_fqdns": from_fqdn, "to_fqdns": to_fqdn,
                    "workloads": workload, "from_workloads": from_workload, "to_workloads": to_workload,
                    "services": service, "from_services": from_service, "to_services": to_service,
                }.items() if v}  # fmt: skip
            now = time.time_ns()
            include: dict[str, Any] = dict(kept)
            flt = FilterSet(
                FlowFilter.build(**include, since=since, until=until, now_ns=now),
                FlowFilter.build(**negated, now_ns=now) if negated else None,
            )
        except FilterError as e:
            raise fail(str(e), 2) from e
        nodes = tuple(node_name or ())
        cfg = node_config(state_dir, run_dir)
        feeds = feeds_for(cfg, log_only=from_log, nodes=nodes)
        several = len(feeds) > 1
        # one node's flows come in its own order; several wait a moment for each other's earlier ones
        relay = Relay(feeds, window_ns=DEFAULT_WINDOW_NS if several else 0)

        def keep(flows: Iterable[Flow]) -> list[Flow]:
            return [f for f in flows if node_matches(nodes, f.node_name) and flt.matches(f)]

        flows = relay.snapshot()
        report = several and not from_log  # which nodes do not answer, unless the logs were asked for
        if report:
            _report(relay)
        shown = keep(flows)
        write = _Writer(output, print_node_name)
        shown = shown[-last:] if last is not None and last > 0 else ([] if last == 0 else shown)
        if first is not None:
            shown = shown[: max(first, 0)]
        if output == "table":
            sys.stdout.write(rnd.table(shown, print_node_name))
        else:
            write(shown)
        if (relay.suppressed or relay.lost) and not follow:
            err_console.print(
                f"note: the datapath suppressed {relay.suppressed} events (rate limit) "
                f"and lost {relay.lost} (ring full)"
            )
        if not shown and not follow:
            if several:
                where = f"{len(feeds)} nodes"
            elif not feeds:
                where = f"no node matches --node-name {' '.join(nodes)}"
            else:
                feed = feeds[0]
                on_agent = feed.state is not None and feed.state.source == "agent"
                where = "the agent" if on_agent else f"the flow log in {feed.log.directory}"
            err_console.print(f"no flows matched ({len(flows)} flows in {where})")
        if not follow:
            return
        deadline = None if follow_for is None else time.monotonic() + follow_for
        try:
            while True:
                final = deadline is not None and time.monotonic() >= deadline  # before the poll: it sees all
                write(keep(relay.poll(final=final)))
                if report:
                    _report(relay)
                if final:
                    return
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass
