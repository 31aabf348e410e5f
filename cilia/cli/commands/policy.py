"""``cilia policy from-flows``: least-privilege CiliumNetworkPolicy YAML from observed flows.

Flows come from the node's flow log (``--state-dir``; on a cluster set up here, every node's) or
from files of ``cilia observe -o json`` lines (``--flows FILE``, ``-`` for stdin). The YAML is
validated before it is written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cilia.cli.common import RunDirOpt, StateDirOpt, err_console, fail, node_config
from cilia.cli.nameopts import namespaces_option
from cilia.cli.render import format_error
from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result
from cilia.observe.filters import FilterError, FlowFilter
from cilia.observe.flow import Flow
from cilia.observe.fromflows import FromFlowsError, policies_from_flows, to_yaml
from cilia.observe.relay import Relay
from cilia.observe.source import feeds_for, flow_from_record


def read_flow_lines(text: str, where: str) -> list[Flow]:
    """Flows from JSON lines (``cilia observe -o json``); blank lines are skipped."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(flow_from_record(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}:{n}: not a flow: {e}") from e
    return out


def register(app: typer.Typer) -> None:
    policy = typer.Typer(help="Policy from what the node observed.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    @policy.command("from-flows")
    def from_flows_cmd(
        flows_file: Annotated[
            list[Path] | None,
            typer.Option("--flows", help="JSON lines of `cilia observe -o json` ('-': stdin)"),
        ] = None,
        namespace: Annotated[
            list[str] | None,
            typer.Option("--namespace", "-n", help="Only these namespaces", callback=namespaces_option),
        ] = None,
        pod: Annotated[list[str] | None, typer.Option("--pod", help="[NS/]NAME on either side")] = None,
        since: Annotated[str | None, typer.Option(help="5m, 1h30m or an RFC 3339 time")] = None,
        until: Annotated[str | None, typer.Option(help="5m, 1h30m or an RFC 3339 time")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="yaml | json")] = "yaml",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Write CiliumNetworkPolicies that allow exactly the forwarded and audited flows seen."""
        if output not in ("yaml", "json"):
            raise fail(f"unknown output format {output!r} (yaml, json)", 2)
        try:
            flt = FlowFilter.build(
                namespaces=namespace or (), pods=pod or (), since=since, until=until, now_ns=time.time_ns()
            )
        except FilterError as e:
            raise fail(str(e), 2) from e
        flows: list[Flow] = []
        try:
            if flows_file:
                for path in flows_file:
                    text = sys.stdin.read() if str(path) == "-" else path.read_text()
                    flows += read_flow_lines(text, "<stdin>" if str(path) == "-" else str(path))
            else:
                # every node's flow log on a cluster set up here (cilia up --nodes N)
                flows = Relay(feeds_for(node_config(state_dir, run_dir), log_only=True)).snapshot()
        except (OSError, ValueError) as e:
            raise fail(str(e), 2) from e
        try:
            docs, skipped = policies_from_flows(flt.stream(flows))
        except FromFlowsError as e:
            raise fail(f"{e} ({len(flows)} flows read)") from e
        text = to_yaml(docs)
        report = validate_result(load_text(text, "<from-flows>"))
        if report.errors:  # a generator bug, never the user's: say so rather than print bad YAML
            raise fail(
                "generated policy does not validate:\n" + "\n".join(format_error(e) for e in report.errors)
            )
        for note in skipped:
            err_console.print(f"note: {note}")
        if output == "json":
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2))
        else:
            sys.stdout.write(text)
