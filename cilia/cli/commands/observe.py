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
from typing import Annotated

import typer

from cilia.cli.commands.node import RunDirOpt, StateDirOpt, err_console, fail, node_config
from cilia.cli.nameopts import namespaces_option
from cilia.observe import render as rnd
from cilia.observe.filters import FilterError, FlowFilter
from cilia.observe.flow import Flow
from cilia.observe.relay import DEFAULT_WINDOW_NS, Relay, node_matches
from cilia.observe.source import feeds_for

Multi = list[str] | None
POLL_S = 0.2


def _write(flows: Iterable[Flow], output: str, node_names: bool) -> None:
    for f in flows:
        sys.stdout.write((rnd.json_line(f) if output == "json" else rnd.compact(f, node_names)) + "\n")
    sys.stdout.flush()


def _report(relay: Relay) -> None:
    for state in relay.take_changes():
        err_console.print(f"note: {state.describe()}")


def register(app: typer.Typer) -> None:
    @app.command("observe")
    def observe_cmd(
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
        output: Annotated[str, typer.Option("-o", "--output", help="compact | json | table")] = "compact",
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
            raise fail(f"unknown output format {output!r} (compact, json, table)", 2)
        if follow and output == "table":
            raise fail("--follow prints flows as they come: use -o compact or -o json", 2)
        try:
            flt = FlowFilter.build(
                verdicts=verdict or (), from_pods=from_pod or (), to_pods=to_pod or (), pods=pod or (),
                namespaces=namespace or (), from_labels=from_label or (), to_labels=to_label or (),
                protocols=protocol or (), types=type_ or (), ports=port or (), since=since, until=until,
                now_ns=time.time_ns(), http_methods=http_method or (), http_paths=http_path or (),
                http_statuses=http_status or (), http_urls=http_url or (),
            )  # fmt: skip
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
        shown = shown[-last:] if last is not None and last > 0 else ([] if last == 0 else shown)
        if output == "table":
            sys.stdout.write(rnd.table(shown, print_node_name))
        else:
            _write(shown, output, print_node_name)
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
                _write(keep(relay.poll(final=final)), output, print_node_name)
                if report:
                    _report(relay)
                if final:
                    return
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass
