"""``cilia get KIND [NAME] [-n NS | -A] [-o wide|json|yaml]``: kubectl-shaped listings of the node.

Objects come from the store; pod status (IP, identity, endpoint) and the endpoint and identity
tables come from the running agent. Without an agent, pods show status ``Unknown``.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from cilia.agent import views
from cilia.agent.client import AgentAPIError, AgentUnavailable
from cilia.agent.cluster import member_configs, member_endpoints
from cilia.agent.events import read_events
from cilia.agent.resources import AmbiguousNameError, resolve_kind
from cilia.cli.common import RunDirOpt, StateDirOpt, agent_client, fail, node_config, open_node_store
from cilia.cli.nameopts import namespace_option
from cilia.k8s import secrets
from cilia.store import Kind, Record, Store

AGENT_KINDS = {
    "endpoints": "endpoints", "endpoint": "endpoints", "ep": "endpoints", "cep": "endpoints",
    "identities": "identities", "identity": "identities", "id": "identities",
    "events": "events", "event": "events", "ev": "events",
}  # fmt: skip


def node_name(index: int) -> str:
    return f"cilia-node-{index}"


def _records(store: Store, kind: Kind, namespace: str | None, name: str | None) -> list[Record]:
    ns = namespace if kind.namespaced else None
    recs = store.list(kind, ns)
    if name:
        exact = [r for r in recs if r.key.name == name]
        recs = exact or [r for r in recs if r.key.name.startswith(name)]
        if len(recs) > 1 and not exact:
            raise AmbiguousNameError(kind, namespace or "", name, [r.key.name for r in recs])
    return recs


def _nodes(cfg: Any, name: str | None) -> list[dict[str, Any]]:
    """The lab's nodes as Node objects: each one's stored object (``cilia label node``), else the
    lab's default labels."""
    from cilia.agent.hostendpoint import default_node_labels, node_manifest
    from cilia.agent.hostsafety import node_names
    from cilia.store import Kind

    names = [n for n in node_names(cfg) if name is None or n == name]
    if name is not None and not names:
        raise fail(f'node "{name}" not found (the lab\'s nodes: {", ".join(node_names(cfg))})')
    with open_node_store(cfg) as store:
        recs = {n: store.get(Kind.NODES.key("", n)) for n in names}
    return [rec.value if rec is not None else node_manifest(n, default_node_labels(n))
            for n, rec in recs.items()]


def _emit(output: str, table: views.Table, items: list[dict[str, Any]], empty_note: str) -> None:
    if output == "json":
        print(json.dumps(views.as_list(items), indent=2, sort_keys=False))
    elif output == "yaml":
        sys.stdout.write(views.to_yaml(views.as_list(items)))
    elif table.rows:
        sys.stdout.write(table.render())
    else:
        print(empty_note, file=sys.stderr)


def register(app: typer.Typer) -> None:
    @app.command("get")
    def get_cmd(
        kind: Annotated[
            str,
            typer.Argument(
                help="pods | deployments | services | cnp | ccnp | netpol | endpoints | identities | events"
            ),
        ],
        name: Annotated[str | None, typer.Argument(help="One object (a unique prefix is enough).")] = None,
        namespace: Annotated[str, typer.Option("-n", "--namespace", callback=namespace_option)] = "default",
        all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces")] = False,
        output: Annotated[str, typer.Option("-o", "--output", help="table | wide | json | yaml")] = "table",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """List objects of a kind, kubectl style."""
        if output not in ("table", "wide", "json", "yaml"):
            raise fail(f"unknown output format {output!r} (table, wide, json, yaml)", 2)
        cfg = node_config(state_dir, run_dir)
        wide = output == "wide"
        ns = None if all_namespaces else namespace
        where = "any namespace" if all_namespaces else f"{namespace} namespace"
        empty = f"No resources found in {where}."
        if kind.lower() in ("nodes", "node", "no"):  # the lab's nodes and their labels (host firewall)
            items = _nodes(cfg, name)
            _emit(output, views.nodes_table(items), items, "No resources found.")
            return
        agent_kind = AGENT_KINDS.get(kind.lower())
        if agent_kind == "events":
            events = [e.to_json() for e in read_events(cfg.events_path)]
            if ns is not None:
                events = [e for e in events if f"/{ns}/" in e["involved"] or e["involved"].count("/") < 2]
            items = [views.event_object(e) for e in events]
            _emit(output, views.events_table(events), items, "No events found.")
            return
        if agent_kind is not None:
            try:
                if agent_kind == "endpoints" and member_configs(cfg):  # every node's, host endpoints too
                    data = member_endpoints(cfg)
                else:
                    data = getattr(agent_client(cfg), agent_kind)()
            except (AgentUnavailable, AgentAPIError) as e:
                raise fail(str(e)) from e
            if agent_kind == "endpoints":
                # the host endpoint (host firewall) is in no namespace: always listed
                items = [e for e in data if not e.get("host_network")  # hostNetwork pods: no endpoint
                         and (ns is None or e.get("host") or str(e["pod"]).startswith(f"{ns}/"))]
                _emit(output, views.endpoints_table(items, namespace=None, wide=wide), items, empty)
            else:
                items = data if name is None else [i for i in data if str(i["id"]) == name]
                _emit(output, views.identities_table(items, wide=wide), items, "No identities found.")
            return
        skind = resolve_kind(kind)
        if skind is None:
            raise fail(f'the server doesn\'t have a resource type "{kind}"', 2)
        with open_node_store(cfg) as store:
            try:
                recs = _records(store, skind, ns, name)
            except AmbiguousNameError as e:
                raise fail(str(e)) from e
            if name and not recs:
                raise fail(f'{skind.value} "{name}" not found')
            endpoints: list[dict[str, Any]] = []
            agent_up = True
            if skind in (Kind.PODS, Kind.DEPLOYMENTS):
                try:
                    several = bool(member_configs(cfg))  # cilia up --nodes N: every node's endpoints
                    endpoints = member_endpoints(cfg) if several else agent_client(cfg).endpoints()
                except (AgentUnavailable, AgentAPIError):
                    agent_up = False
            node = node_name(cfg.node_index)
            if skind is Kind.PODS:
                table = views.pods_table(
                    recs, endpoints, agent_up=agent_up, node=node, wide=wide, all_namespaces=all_namespaces
                )
                _emit(output, table, views.pod_objects(recs, endpoints, agent_up=agent_up, node=node), empty)
                if output in ("table", "wide") and recs:
                    print(views.IMAGES_NOTE, file=sys.stderr)
                if not agent_up and output in ("table", "wide"):
                    print("note: no agent answers; start the node with `cilia up`", file=sys.stderr)
                return
            items = [r.value for r in recs]
            if skind is Kind.SECRETS:  # names and keys only, never the values
                items = [secrets.redacted(i) for i in items]
                table = views.Table(("NAME", "TYPE", "DATA", "KEYS"), tuple(
                    (r.key.name, str(r.value.get("type") or "Opaque"), str(len(secrets.secret_keys(r.value))),
                     ",".join(secrets.secret_keys(r.value)) or "<none>") for r in recs))
            elif skind is Kind.DEPLOYMENTS:
                pods = store.list(Kind.PODS)
                table = views.deployments_table(
                    recs, pods, endpoints, all_namespaces=all_namespaces, wide=wide
                )
            elif skind is Kind.SERVICES:
                table = views.services_table(recs, all_namespaces=all_namespaces, wide=wide)
            elif skind in (Kind.CNP, Kind.CCNP, Kind.KNP):
                table = views.policies_table(recs, all_namespaces=all_namespaces, wide=wide)
            else:
                table = views.Table(
                    ("NAME", "LABELS"),
                    tuple(
                        (r.key.name, views._labels_text((r.value.get("metadata") or {}).get("labels")))
                        for r in recs
                    ),
                )
            _emit(output, table, items, empty)
