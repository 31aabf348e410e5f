"""Options and error handling shared by the offline analysis commands (trace, connectivity, verify,
lint). No ``register``: this module adds no command of its own."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from cilia.analyze.cluster import AllowLocalhost, Analysis, EnforcementMode, Options, analyse_paths
from cilia.analyze.learned import NodeDns, NodeStateError
from cilia.analyze.peers import PeerError
from cilia.cli import common
from cilia.cli.render import print_errors, print_warnings
from cilia.k8s.errors import Error, ManifestError

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2

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

T = TypeVar("T")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """:func:`cilia.cli.common.fail`, exiting 2 (bad input) unless told otherwise."""
    return common.fail(message, code)


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; turn bad input (unreadable/invalid manifests, unknown peers) into exit 2 with
    the problems on stderr."""
    try:
        return action()
    except ManifestError as exc:
        sys.stderr.write("error: the manifests cannot be analysed as they are:\n")
        print_errors(exc.errors, sys.stderr)
        if not exc.unreadable:
            fixable = any(e.path.rsplit(".", 1)[-1] == "deny" for e in exc.errors)  # a deny: key is there
            sys.stderr.write(
                "(real Cilium would refuse these objects"
                + ("; `cilia validate --fix` corrects deny:)\n" if fixable else ")\n")
            )
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Error as exc:
        print_errors([exc], sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (PeerError, NodeStateError) as exc:
        raise fail(str(exc)) from None


class _NodeStateDns(NodeDns):
    """A node's DNS answers whose state directory is resolved on first use: most questions need
    none, and the agent's configuration module (with the store's) costs start-up (issue 15)."""

    def __init__(self, given: Path | None) -> None:  # not NodeDns.__init__: it would set state_dir
        self.now = time.time()
        self._given = given

    @cached_property
    def state_dir(self) -> Path | None:  # type: ignore[override]
        from cilia.agent.config import AgentConfig

        return AgentConfig.resolve(self._given).state_dir


def node_dns(state_dir: Path | None, no_state: bool) -> NodeDns:
    """What the node learned from DNS answers: its state directory resolved as the node commands
    do (flag, env, default), read only when a question needs it."""
    if no_state and state_dir is not None:
        raise fail("--no-state and --state-dir contradict each other: give one")
    return NodeDns(None) if no_state else _NodeStateDns(state_dir)


LocalNode = Annotated[
    str,
    typer.Option(
        "--node",
        metavar="NAME",
        help="Decide as this Node of the manifests: entity:host is it, pods without spec.nodeName run "
        "on it, connectivity's host row is its host endpoint (default: the only Node).",
    ),
]


def load(
    files: list[str],
    mode: EnforcementMode,
    localhost: AllowLocalhost,
    dns: NodeDns | None = None,
    node_selector_labels: bool = False,
    local_node: str = "",
) -> Analysis:
    options = Options(mode, localhost, node_selector_labels=node_selector_labels, local_node=local_node)
    analysis = guarded(lambda: analyse_paths(files, options, dns=dns))
    print_warnings(analysis.cluster.warnings)  # documents replaced by later ones of the same name
    return analysis
