"""``cilia apply -f …`` and ``cilia delete -f … | delete KIND NAME``: change the node's desired state.

Atomic: every document is validated (errors exactly as ``cilia validate`` prints them) before
anything is stored, and everything is stored in one store transaction. When an agent runs, the
command returns once the agent has reconciled the change (``--no-wait`` to return at once).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cilia.agent import manifests
from cilia.agent.resources import AmbiguousNameError, resolve_kind, resolve_name
from cilia.cli.common import (
    OutputStrOpt,
    RunDirOpt,
    StateDirOpt,
    console,
    err_console,
    fail,
    node_config,
    open_node_store,
    wait_for_agent,
)
from cilia.cli.nameopts import namespace_option
from cilia.cli.render import plural, print_errors, print_json, print_warnings

FilesOpt = Annotated[list[str], typer.Option("-f", "--filename", help="File, directory or - (stdin).")]
NamespaceOpt = Annotated[
    str,
    typer.Option("-n", "--namespace", help="Namespace for objects without one.", callback=namespace_option),
]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the agent has reconciled.")]


def _finish(
    outcome: manifests.ApplyOutcome, output: str, wait: bool, cfg_args: tuple, extra: dict | None = None
) -> None:
    cfg = node_config(*cfg_args)
    if output == "json":
        print_json({**outcome.to_json(), **(extra or {})})
    else:
        print_warnings(outcome.warnings)
        if not outcome.ok:
            print_errors(outcome.report.errors, sys.stderr)
            n = len(outcome.report.errors)
            err_console.print(f"{plural(n, 'error')}; nothing was applied")
        for f in outcome.fixes:
            for c in f.changes:
                console.print(f"fixed {f.file}: {c.path}: {c.description}", highlight=False)
        for r in outcome.results:
            console.print(r.describe(), highlight=False)
    if not outcome.ok:
        raise typer.Exit(2 if outcome.report.unreadable else 1)
    if wait and outcome.revision:
        wait_for_agent(cfg, outcome.revision, quiet=output == "json")


def _print_delta(store: Any, planned: manifests.ApplyOutcome, output: str, cfg: Any) -> dict[str, Any]:
    """The connectivity delta of ``planned`` over the node's objects (``cilia diff``'s text, or
    its dict for -o json)."""
    from cilia.analyze.cluster import AllowLocalhost, EnforcementMode, Options
    from cilia.analyze.diff import diff_objects, render_text, stored_objects
    from cilia.cli.commands._analysis import guarded

    options = Options(EnforcementMode(cfg.enforcement_mode), AllowLocalhost(cfg.allow_localhost))
    delta = guarded(lambda: diff_objects(stored_objects(store), planned.objects, options))
    if output != "json":
        console.print(render_text(delta), end="", highlight=False, markup=False)
    return delta.to_dict()


def _finish_dry_run(store: Any, planned: manifests.ApplyOutcome, output: str, cfg: Any) -> None:
    """``apply --dry-run``: the objects as apply would report them, marked (dry run), and the delta."""
    if not planned.ok:
        _finish(planned, output, False, (cfg.state_dir, cfg.run_dir))
    if output == "json":
        delta = _print_delta(store, planned, "json", cfg)
        print_json({**planned.to_json(), "dry_run": True, "connectivity": delta})
        return
    print_warnings(planned.warnings)
    for f in planned.fixes:
        for c in f.changes:
            console.print(f"fixed {f.file}: {c.path}: {c.description}", highlight=False)
    for r in planned.results:
        console.print(f"{r.describe()} (dry run)", highlight=False)
    _print_delta(store, planned, output, cfg)


def _host_policy_check(store: Any, cfg: Any, force: bool) -> Any:
    """With the host firewall on: the check refusing a host policy that cuts an agent from its
    store (:mod:`cilia.agent.hostsafety`), unless forced."""
    if force or not cfg.host_firewall:
        return None
    from cilia.agent import hostsafety

    return lambda objects: hostsafety.store_lockouts(store, cfg, objects)


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply_cmd(
        filename: FilesOpt,
        namespace: NamespaceOpt = "default",
        fix: Annotated[bool, typer.Option("--fix", help="Apply `cilia validate --fix` fixes first.")] = False,
        output: OutputStrOpt = "text",
        wait: WaitOpt = True,
        allow_l4_only_l7: Annotated[
            bool,
            typer.Option(
                "--allow-l4-only-l7",
                help="Store policies with Kafka, l7proto or listener rules (cilia has no such proxy): "
                "enforced at L4 only, marked with the cilia.io/l4-only-l7 annotation.",
            ),
        ] = False,
        dry_run: Annotated[
            bool,
            typer.Option("--dry-run", help="Store nothing: print what would change and who could then "
                         "reach whom that cannot now (the `cilia diff` of the node's objects and these)."),
        ] = False,
        show_diff: Annotated[
            bool, typer.Option("--diff", help="Print that connectivity delta first, then apply.")
        ] = False,
        force_host_policy: Annotated[bool, typer.Option(
            "--force-host-policy", help="Store a host policy even if it cuts a node's agent from its store.")
        ] = False,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Validate manifests and store them, all or nothing."""
        cfg = node_config(state_dir, run_dir)
        delta: dict[str, Any] = {}
        with open_node_store(cfg) as store:
            # host firewall: refuse a host policy that would cut a node's agent from its store
            check = _host_policy_check(store, cfg, force_host_policy)
            if dry_run or show_diff:
                planned = manifests.apply(
                    store, filename, fix=fix, namespace=namespace, allow_l4_only_l7=allow_l4_only_l7,
                    dry_run=True, check=check,
                )
                if not planned.ok or dry_run:
                    _finish_dry_run(store, planned, output, cfg)
                    return
                delta = _print_delta(store, planned, output, cfg)
            outcome = manifests.apply(
                store, filename, fix=fix, namespace=namespace, allow_l4_only_l7=allow_l4_only_l7, check=check
            )
        _finish(outcome, output, wait, (state_dir, run_dir), {"connectivity": delta} if show_diff else None)

    @app.command("delete")
    def delete_cmd(
        kind: Annotated[str | None, typer.Argument(help="pod | deployment | cnp | ccnp | netpol | …")] = None,
        names: Annotated[list[str] | None, typer.Argument(help="Full names, as kubectl.")] = None,
        filename: Annotated[list[str] | None, typer.Option("-f", "--filename", help="File/dir/-.")] = None,
        namespace: NamespaceOpt = "default",
        ignore_not_found: Annotated[bool, typer.Option("--ignore-not-found")] = False,
        output: OutputStrOpt = "text",
        wait: WaitOpt = True,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Delete the objects named by manifests (-f) or by kind and name."""
        cfg = node_config(state_dir, run_dir)
        with open_node_store(cfg) as store:
            if filename:
                outcome = manifests.delete(
                    store, filename, namespace=namespace, ignore_not_found=ignore_not_found
                )
            elif kind and names:
                skind = resolve_kind(kind)
                if skind is None:
                    raise fail(f"unknown kind {kind!r}", 2)
                keys = []
                for name in names:
                    try:
                        key = resolve_name(store, skind, namespace, name, prefix=False)
                    except AmbiguousNameError as e:
                        raise fail(str(e)) from e
                    if key is None and not ignore_not_found:
                        raise fail(f'{kind} "{name}" not found in namespace {namespace}')
                    if key is not None:
                        keys.append(key)
                outcome = manifests.delete_keys(store, keys)
            else:
                raise fail("give -f FILE or KIND NAME", 2)
        _finish(outcome, output, wait, (state_dir, run_dir))
