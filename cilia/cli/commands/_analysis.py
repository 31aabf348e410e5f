"""Options and error handling shared by the offline analysis commands (trace, connectivity, verify,
lint), as typer declares them; what they do once parsed is :mod:`cilia.cli.analysing` (re-exported
here). No ``register``: this module adds no command of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cilia.analyze.cluster import AllowLocalhost, EnforcementMode
from cilia.cli import common
from cilia.cli.analysing import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_OK, guarded, load, node_dns

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_FAIL", "EXIT_OK", "Files", "LocalNode", "Localhost", "Mode", "NoState",
    "NodeSelectorLabels", "StateDir", "fail", "guarded", "load", "node_dns",
]

Files = Annotated[
    list[str],
    typer.Option(
        "-f", "--filename", help="File, directory (-R: with its subdirectories) or - for stdin; repeatable."
    ),
]
Mode = Annotated[
    EnforcementMode,
    typer.Option("--enforcement-mode", help="Policy enforcement mode of the node: default | always | never."),
]
Localhost = Annotated[
    AllowLocalhost,
    typer.Option("--allow-localhost", help="always: the node may reach its pods unless denied; policy: no."),
]
# The agent flag as validate takes it (cilia.k8s.cilium_rules.Flags): without it fromNodes/toNodes are
# refused, as Cilium refuses them; with it remote nodes keep their labels (node: source).
NodeSelectorLabels = Annotated[
    bool,
    typer.Option(
        "--enable-node-selector-labels",
        help="Decide as an agent with enable-node-selector-labels=true (fromNodes/toNodes allowed, "
        "other nodes keep their Node labels).",
    ),
]

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Node state directory whose saved DNS answers decide toFQDNs rules and fqdn:NAME peers "
        "(default /var/lib/cilia, env CILIA_STATE_DIR).",
        show_default=False,
    ),
]
NoState = Annotated[
    bool,
    typer.Option("--no-state", help="Read no node state: nothing learned from DNS, toFQDNs select nothing."),
]


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """:func:`cilia.cli.common.fail`, exiting 2 (bad input) unless told otherwise."""
    return common.fail(message, code)


LocalNode = Annotated[
    str,
    typer.Option(
        "--node",
        metavar="NAME",
        help="Decide as this Node of the manifests: entity:host is it, pods without spec.nodeName run "
        "on it, connectivity's host row is its host endpoint (default: the only Node).",
    ),
]
