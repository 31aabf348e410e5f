"""``cilia describe pod|cnp|ccnp|netpol NAME``: one object in detail, kubectl style.

A pod shows its identity and labels, the policies selecting it and, per direction, whether policy
is enforced and which policies turned default deny on. A policy shows its rules and the pods it
selects on this node.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cilia.agent import views
from cilia.agent.client import AgentAPIError, AgentUnavailable
from cilia.agent.resources import AmbiguousNameError, resolve_kind, resolve_name
from cilia.cli.common import RunDirOpt, StateDirOpt, agent_client, fail, node_config, open_node_store
from cilia.cli.nameopts import namespace_option
from cilia.k8s.l7checks import L4_ONLY_ANNOTATION
from cilia.policy.translate import AUDIT_ANNOTATION
from cilia.store import Kind, Record


def describe_pod(rec: Record, ep: dict[str, Any] | None) -> str:
    """The text of ``describe pod``."""
    meta = rec.value.get("metadata") or {}
    lines = [
        f"Name:         {rec.key.name}",
        f"Namespace:    {rec.key.namespace}",
        "Labels:       "
        + (
            "\n              ".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))
            or "<none>"
        ),
    ]
    owner = (meta.get("annotations") or {}).get("cilia.io/owner")
    if owner:
        lines.append(f"Controlled By: {owner}")
    if ep is None:
        lines.append("Status:       Pending (no endpoint on this node yet)")
        return "\n".join(lines) + "\n"
    pol = ep.get("policy") or {}
    enf = ep.get("enforcement") or {}
    ddb = pol.get("default_deny_by") or {}
    lines += [
        "Status:       Running",
        f"IP:           {ep['ip']}",
        f"Endpoint:     {ep['id']}",
        f"Interface:    {ep.get('host_ifname') or '-'} (netns {ep.get('netns') or '-'})",
        f"Identity:     {ep['identity']}",
        "Identity labels:",
        *(f"  {lb}" for lb in ep.get("labels") or []),
        "Policies selecting this pod:",
        *(f"  {p}" for p in pol.get("policies") or ["<none>"]),
        "Policy enforcement:",
    ]
    for d in ("ingress", "egress"):
        if not enf.get(d):
            lines.append(f"  {d + ':':9} not enforced (no policy section selects this pod: all {d} allowed)")
            continue
        by = ddb.get(d) or []
        why = (
            f"default deny, turned on by {', '.join(by)}"
            if by
            else ("enforced without default deny (enableDefaultDeny false): everything not denied is allowed")
        )
        audit = " (audit mode: drops are reported as AUDIT, not made)" if ep.get("audit") else ""
        lines.append(f"  {d + ':':9} enforced; {why}{audit}")
    lines.append(f"Policy map entries: {ep.get('policy_entries', 0)}")
    return "\n".join(lines) + "\n"


def describe_policy(rec: Record, endpoints: list[dict[str, Any]] | None) -> str:
    """The text of ``describe cnp|ccnp|netpol``."""
    obj = rec.value
    kind = obj.get("kind", "")
    ref = f"{kind}/{rec.key.namespace + '/' if rec.key.namespace else ''}{rec.key.name}"
    lines = [f"Name:         {rec.key.name}"]
    if rec.key.namespace:
        lines.append(f"Namespace:    {rec.key.namespace}")
    lines += [f"Kind:         {kind}", f"Sections:     {views.policy_sections(obj)}"]
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if str(annotations.get(AUDIT_ANNOTATION, "")).strip().lower() == "true":
        lines.append(f"Audit:        yes ({AUDIT_ANNOTATION}): what it would drop is reported as AUDIT, "
                     "not dropped")
    if annotations.get(L4_ONLY_ANNOTATION) == "true":
        lines.append("L7:           rules without a cilia proxy (Kafka, l7proto, listener, host DNS) "
                     f"enforced at L4 only ({L4_ONLY_ANNOTATION}, stored with --allow-l4-only-l7)")
    lines.append("Spec:")
    body = {k: v for k, v in obj.items() if k in ("spec", "specs")}
    lines += ["  " + line for line in views.to_yaml(body).splitlines()]
    lines.append("Selected pods on this node:")
    if endpoints is None:
        lines.append("  <unknown: no agent running>")
    else:
        audited = f"{ref} (audit mode)"  # how the agent lists a policy it only audits for the pod
        sel = [(e, audited in names) for e in endpoints
               if {ref, audited} & set(names := (e.get("policy") or {}).get("policies") or [])]
        lines += [f"  {e['pod']} (identity {e['identity']}, {e['ip']}){', audit mode' if a else ''}"
                  for e, a in sel] or ["  <none>"]
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command("describe")
    def describe_cmd(
        kind: Annotated[str, typer.Argument(help="pod | cnp | ccnp | netpol")],
        name: Annotated[str, typer.Argument(help="Object name (a unique prefix is enough).")],
        namespace: Annotated[str, typer.Option("-n", "--namespace", callback=namespace_option)] = "default",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Show one pod or policy in detail, with what the node enforces for it."""
        cfg = node_config(state_dir, run_dir)
        skind = resolve_kind(kind)
        if skind not in (Kind.PODS, Kind.CNP, Kind.CCNP, Kind.KNP):
            raise fail(f"describe supports pod, cnp, ccnp, netpol (got {kind!r})", 2)
        with open_node_store(cfg) as store:
            try:
                key = resolve_name(store, skind, namespace, name)
            except AmbiguousNameError as e:
                raise fail(str(e)) from e
            rec = store.get(key) if key is not None else None
        if rec is None:
            raise fail(f'{skind.value} "{name}" not found')
        try:
            endpoints: list[dict[str, Any]] | None = agent_client(cfg).endpoints()
        except (AgentUnavailable, AgentAPIError):
            endpoints = None
        if skind is Kind.PODS:
            ep = next((e for e in endpoints or [] if e["pod"] == f"{rec.key.namespace}/{rec.key.name}"), None)
            sys.stdout.write(describe_pod(rec, ep))
            if endpoints is None:
                print("note: no agent answers; start the node with `cilia up`", file=sys.stderr)
        else:
            sys.stdout.write(describe_policy(rec, endpoints))
