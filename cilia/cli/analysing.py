"""What the offline analysis commands (trace, connectivity, verify, lint) share once their options are
parsed: loading the manifests, turning bad input into exit 2 with the problems on stderr, the node's DNS
answers. Imports no typer, so the fast path (:mod:`cilia.cli.fastpath`) and the typer commands
(:mod:`cilia.cli.commands._analysis` re-exports these) run the same code; an exit is a ``SystemExit``,
which typer passes through with its code.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cilia.analyze.learned import NodeDns, NodeStateError
from cilia.analyze.peers import PeerError
from cilia.cli.render import print_errors, print_warnings
from cilia.k8s.errors import Error, ManifestError

if TYPE_CHECKING:
    from cilia.analyze.cluster import AllowLocalhost, Analysis, EnforcementMode

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2

T = TypeVar("T")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> SystemExit:
    """Print ``error: message`` on stderr; the exit to raise (2, bad input, unless told otherwise)."""
    from cilia.cli.consoles import print_error

    print_error(message)
    return SystemExit(code)


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
        raise SystemExit(EXIT_BAD_INPUT) from None
    except Error as exc:
        print_errors([exc], sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
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


def load(
    files: Sequence[str],
    mode: EnforcementMode,
    localhost: AllowLocalhost,
    dns: NodeDns | None = None,
    node_selector_labels: bool = False,
    local_node: str = "",
) -> Analysis:
    """The analysis of ``files`` as a node with these settings decides (exit 2 on bad input)."""
    from cilia.analyze.cluster import Options, analyse_paths

    options = Options(mode, localhost, node_selector_labels=node_selector_labels, local_node=local_node)
    analysis = guarded(lambda: analyse_paths(list(files), options, dns=dns))
    print_warnings(analysis.cluster.warnings)  # documents replaced by later ones of the same name
    return analysis
