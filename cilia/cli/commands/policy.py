"""``cilia policy from-flows``: least-privilege CiliumNetworkPolicy YAML from observed flows.

Flows come from the node's flow log (``--state-dir``; on a cluster set up here, every node's) or
from files of ``cilia observe -o json`` lines (``--flows FILE``, ``-`` for stdin). The YAML is
validated before it is written. ``--diff`` prints, instead of the YAML, what applying it would change
(``cilia diff``'s delta) over the current policies: the manifests given with ``-f``, or the node's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cilia.cli.common import (
    DiffOutput,
    RunDirOpt,
    StateDirOpt,
    err_console,
    fail,
    node_config,
    open_node_store,
)
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




def proposal_diff(
    docs: list[dict[str, Any]], text: str, current: list[str] | None, cfg_args: tuple[Any, Any]
) -> Any:
    """The connectivity delta of applying the generated ``docs`` over the current policies: the
    manifests ``current`` (files or directories), or the objects the node stores."""
    from cilia.analyze.cluster import AllowLocalhost, EnforcementMode, Options
    from cilia.analyze.diff import diff, diff_objects, stored_objects
    from cilia.cli.commands._analysis import guarded, load
    from cilia.store import API_KINDS, ObjectKey

    if current:
        with tempfile.TemporaryDirectory(prefix="cilia-from-flows-") as tmp:
            proposal = Path(tmp) / "from-flows.yaml"
            proposal.write_text(text, encoding="utf-8")
            old = load(current, EnforcementMode.DEFAULT, AllowLocalhost.ALWAYS)
            new = load([*current, str(proposal)], EnforcementMode.DEFAULT, AllowLocalhost.ALWAYS)
        return diff(old, new)
    cfg = node_config(*cfg_args)
    options = Options(EnforcementMode(cfg.enforcement_mode), AllowLocalhost(cfg.allow_localhost))
    planned = [
        (ObjectKey(API_KINDS[d["kind"]], d["metadata"]["namespace"], d["metadata"]["name"]), d) for d in docs
    ]
    with open_node_store(cfg) as store:
        return guarded(lambda: diff_objects(stored_objects(store), planned, options))


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
        show_diff: Annotated[
            bool,
            typer.Option(
                "--diff",
                help="Print what the proposal changes (cilia diff's delta) over the current policies "
                "instead of the YAML.",
            ),
        ] = False,
        current: Annotated[
            list[str] | None,
            typer.Option(
                "-f", "--filename", help="--diff: the current manifests (default: the node's objects)."
            ),
        ] = None,
        diff_output: Annotated[
            DiffOutput,
            typer.Option("--diff-output", help="--diff: text | json | md | csv | dot | mermaid | html"),
        ] = DiffOutput.text,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Write CiliumNetworkPolicies that allow exactly the forwarded and audited flows seen.

        Peers are selected the narrowest way the flow allows: a pod by its identity labels, an entity,
        an outside address by the DNS names the node learned for it (toFQDNs, with a DNS rule for the
        lookups) or else as a /32. --diff shows the proposal as cilia diff against the current
        policies (-f FILE|DIR, or the node's).
        """
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
            err_console.print(f"note: {note}", markup=False, highlight=False)
        if show_diff:
            from cilia.analyze.diff import RENDERERS

            delta = proposal_diff(docs, text, current, (state_dir, run_dir))
            if diff_output is DiffOutput.html:
                from cilia.analyze.graphpage import render_diff_page

                sys.stdout.write(render_diff_page(delta))
            else:
                sys.stdout.write(RENDERERS[diff_output.value](delta))
            return
        if current:
            raise fail("-f gives the current policies for --diff", 2)
        if output == "json":
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2))
        else:
            sys.stdout.write(text)
