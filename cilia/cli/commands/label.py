"""``cilia label pod|node NAME k=v [k2-] [--overwrite]``: change a pod's labels (and so its
identity) or a node's (and so its host endpoint's)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cilia.agent.resources import resolve_kind, resolve_name
from cilia.cli.common import (
    OutputStrOpt,
    RunDirOpt,
    StateDirOpt,
    console,
    fail,
    node_config,
    open_node_store,
    wait_for_agent,
)
from cilia.cli.nameopts import namespace_option
from cilia.k8s.names import labels_errors, qualified_name_errors
from cilia.store import StoreError

NODE_KINDS = ("node", "nodes", "no")


class LabelError(ValueError):
    """A label argument that cannot be applied."""


def parse_label_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``k=v`` sets, ``k-`` removes (kubectl's syntax); keys and values checked as Kubernetes does."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for a in args:
        if a.endswith("-") and "=" not in a:
            key = a[:-1]
            problems = qualified_name_errors(key)
            if problems:
                raise LabelError(f"invalid label key {key!r}: {problems[0]}")
            removes.append(key)
        elif "=" in a:
            k, _, v = a.partition("=")
            if not k:
                raise LabelError(f"invalid label {a!r}: empty key")
            problems = labels_errors({k: v})
            if problems:
                raise LabelError(f"invalid label {a!r}: {problems[0][1]}")
            sets[k] = v
        else:
            raise LabelError(f"invalid label {a!r}: use key=value or key-")
    return sets, removes


def relabel(obj: dict[str, Any], sets: dict[str, str], removes: list[str], overwrite: bool) -> dict[str, Any]:
    """The object with its labels changed; LabelError if a key exists and ``overwrite`` is off."""
    meta = dict(obj.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    for k, v in sets.items():
        if k in labels and labels[k] != v and not overwrite:
            raise LabelError(f"'{k}' already has a value ({labels[k]}), and --overwrite is false")
        labels[k] = v
    for k in removes:
        labels.pop(k, None)
    meta["labels"] = labels
    return {**obj, "metadata": meta}


def register(app: typer.Typer) -> None:
    @app.command("label")
    def label_cmd(
        kind: Annotated[str, typer.Argument(help="pod | namespace | deployment | …")],
        name: Annotated[str, typer.Argument(help="The object's full name (as kubectl, no prefixes).")],
        labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove.")],
        namespace: Annotated[str, typer.Option("-n", "--namespace", callback=namespace_option)] = "default",
        overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until enforced.")] = True,
        output: OutputStrOpt = "text",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Set or remove labels; a pod's new labels give it a new identity on the node.

        A node's labels (``cilia label node NAME k=v``) are its host endpoint's: host policies
        (CCNP nodeSelector) select nodes by them."""
        cfg = node_config(state_dir, run_dir)
        if kind.lower() in NODE_KINDS:
            _label_node(cfg, name, labels, overwrite, wait, output)
            return
        skind = resolve_kind(kind)
        if skind is None:
            raise fail(f"unknown kind {kind!r}", 2)
        try:
            sets, removes = parse_label_args(labels)
        except LabelError as e:
            raise fail(str(e), 2) from e
        with open_node_store(cfg) as store:
            # the full name only, as kubectl: a prefix could relabel a pod the user did not name
            key = resolve_name(store, skind, namespace, name, prefix=False)
            if key is None:
                raise fail(f'{skind.value} "{name}" not found in namespace {namespace}')
            try:
                rec = store.get(key)
                unchanged = rec is not None and relabel(rec.value, sets, removes, overwrite) == rec.value
                revision = (
                    store.revision
                    if unchanged
                    else store.update(key, lambda o: relabel(o, sets, removes, overwrite))
                )
            except LabelError as e:
                raise fail(str(e)) from e
            except StoreError as e:
                raise fail(str(e)) from e
        verb = "not labeled" if unchanged else "labeled"
        if output == "json":
            print(
                json.dumps(
                    {
                        "kind": skind.value,
                        "namespace": key.namespace,
                        "name": key.name,
                        "revision": revision,
                        "changed": not unchanged,
                    }
                )
            )
        else:
            console.print(f"{skind.value.rstrip('s')}/{key.name} {verb}", highlight=False)
        if wait:
            wait_for_agent(cfg, revision, quiet=output == "json")


def lab_node_names(cfg: Any) -> list[str]:
    """The nodes of the lab set up with ``cfg``: ``node-<i>`` of each cluster member, else the one
    node's (``cilia-node-<index>``)."""
    from cilia.agent.hostsafety import node_names

    return node_names(cfg)


def _label_node(cfg: Any, name: str, args: list[str], overwrite: bool, wait: bool, output: str) -> None:
    """``cilia label node NAME k=v k2-``: the node's stored Node object (made from the lab's default
    labels on first use) with its labels changed."""
    from cilia.agent.hostendpoint import default_node_labels, node_manifest
    from cilia.store import Kind

    nodes = lab_node_names(cfg)
    if name not in nodes:
        raise fail(f'node "{name}" not found (the lab\'s nodes: {", ".join(nodes)})')
    try:
        sets, removes = parse_label_args(args)
    except LabelError as e:
        raise fail(str(e), 2) from e
    key = Kind.NODES.key("", name)
    with open_node_store(cfg) as store:
        rec = store.get(key)
        current = rec.value if rec is not None else node_manifest(name, default_node_labels(name))
        try:
            changed = relabel(current, sets, removes, overwrite)
        except LabelError as e:
            raise fail(str(e)) from e
        unchanged = rec is not None and changed == rec.value
        try:
            revision = store.revision if unchanged else store.put(key, changed)
        except StoreError as e:
            raise fail(str(e)) from e
    if output == "json":
        print(json.dumps({"kind": "nodes", "namespace": "", "name": name, "revision": revision,
                          "changed": not unchanged, "labels": changed["metadata"]["labels"]}))
    else:
        console.print(f"node/{name} {'not labeled' if unchanged else 'labeled'}", highlight=False)
    if wait:
        wait_for_agent(cfg, revision, quiet=output == "json")
