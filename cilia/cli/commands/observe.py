"""``cilia observe``: the node's flows (policy verdicts naming the rule), filtered like ``hubble observe``.

Reads the running agent's flow ring (``GET /v1/flows``) when an agent answers, else the durable flow
log in the state directory (``--from-log`` forces the log).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Annotated

import typer

from cilia.cli.commands.node import RunDirOpt, StateDirOpt, err_console, fail, node_config
from cilia.observe import render as rnd
from cilia.observe.filters import FilterError, FlowFilter
from cilia.observe.flow import Flow
from cilia.observe.log import FlowLog
from cilia.observe.source import agent_source

Multi = list[str] | None


def _write(flows: Iterable[Flow], output: str) -> None:
    for f in flows:
        sys.stdout.write((rnd.json_line(f) if output == "json" else rnd.compact(f)) + "\n")
    sys.stdout.flush()


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
            Multi, typer.Option("--namespace", "-n", help="Namespace of either side")
        ] = None,
        from_label: Annotated[Multi, typer.Option("--from-label", help="key=value of the source")] = None,
        to_label: Annotated[Multi, typer.Option("--to-label", help="key=value of the destination")] = None,
        protocol: Annotated[
            Multi, typer.Option("--protocol", help="tcp | udp | sctp | icmp | icmpv6")
        ] = None,
        port: Annotated[Multi, typer.Option("--port", help="Source or destination port")] = None,
        since: Annotated[str | None, typer.Option(help="5m, 1h30m or an RFC 3339 time")] = None,
        until: Annotated[str | None, typer.Option(help="5m, 1h30m or an RFC 3339 time")] = None,
        last: Annotated[int | None, typer.Option("--last", help="Only the newest N matching flows")] = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new flows")] = False,
        output: Annotated[str, typer.Option("-o", "--output", help="compact | json | table")] = "compact",
        from_log: Annotated[
            bool, typer.Option("--from-log", help="Read the flow log even if an agent runs")
        ] = False,
        follow_for: Annotated[float | None, typer.Option("--follow-for", hidden=True)] = None,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Show flows: each drop and each allowed new connection, with the rule that decided."""
        if output not in rnd.FORMATS:
            raise fail(f"unknown output format {output!r} (compact, json, table)", 2)
        if follow and output == "table":
            raise fail("--follow prints flows as they come: use -o compact or -o json", 2)
        try:
            flt = FlowFilter.build(
                verdicts=verdict or (), from_pods=from_pod or (), to_pods=to_pod or (), pods=pod or (),
                namespaces=namespace or (), from_labels=from_label or (), to_labels=to_label or (),
                protocols=protocol or (), ports=port or (), since=since, until=until, now_ns=time.time_ns(),
            )  # fmt: skip
        except FilterError as e:
            raise fail(str(e), 2) from e
        cfg = node_config(state_dir, run_dir)
        agent = None if from_log else agent_source(cfg.socket_path)
        log = FlowLog(cfg.state_dir)
        if agent is not None:
            flows, last_seq = agent.read(0)
        else:
            flows = list(log.read())
            last_seq = flows[-1].seq if flows else 0
        shown = flt.apply(flows, last)
        if output == "table":
            sys.stdout.write(rnd.table(shown))
        else:
            _write(shown, output)
        suppressed = agent.suppressed if agent is not None else sum(f.suppressed for f in flows)
        lost = agent.lost if agent is not None else 0
        if (suppressed or lost) and not follow:
            err_console.print(
                f"note: the datapath suppressed {suppressed} events (rate limit) and lost {lost} (ring full)"
            )
        if not shown and not follow:
            where = "the agent" if agent is not None else f"the flow log in {cfg.state_dir}"
            err_console.print(f"no flows matched ({len(flows)} flows in {where})")
        if not follow:
            return
        deadline = None if follow_for is None else time.monotonic() + follow_for

        def stop() -> bool:
            return deadline is not None and time.monotonic() >= deadline

        stream = agent.follow(last_seq, stop=stop) if agent is not None else log.follow(last_seq, stop=stop)
        try:
            for f in flt.stream(stream):
                _write([f], output)
        except KeyboardInterrupt:
            pass
