"""The command table: every ``cilia`` command, the module of :mod:`cilia.cli.commands` that registers
it, and its one-line help — what ``cilia --help`` lists without importing any command module.
tests/test_cli_lazy.py checks it against what the modules really register.
"""

from __future__ import annotations

from cilia.cli import commands

HELP = "Identity-based network policy for Linux workloads (Cilium semantics, eBPF datapath)."

# (command, module that registers it, first paragraph of its help), in the order `cilia --help` lists
# them: plain commands by module, then command groups by module (typer's own order).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("apply", "apply", "Validate manifests and store them, all or nothing."),
    ("delete", "apply", "Delete the objects named by manifests (-f) or by kind and name."),
    ("audit", "audit", "Turn policy audit mode on or off: drops are let through and reported as AUDIT."),
    ("completion", "completion", "Print the shell completion script for bash, zsh or fish."),
    (
        "connectivity",
        "connectivity",
        "Who can reach whom, per port class: pods (grouped by identity), world and host.",
    ),
    ("describe", "describe", "Show one pod or policy in detail, with what the node enforces for it."),
    (
        "diff",
        "diff",
        "What changes in who can reach whom: opened, closed, new deciding rule; workloads added/removed.",
    ),
    ("get", "get", "List objects of a kind, kubectl style."),
    ("label", "label", "Set or remove labels; a pod's new labels give it a new identity on the node."),
    ("lint", "lint", "Lint policy manifests for pitfalls, with stable rule ids (--rules lists them)."),
    ("agent", "node", "Run the node agent in the foreground ('cilia up' runs it in the background)."),
    ("up", "node", "Start the local node: the agent in the background; waits until it is ready."),
    ("down", "node", "Stop the agent and remove every pod, link, pin, socket and process cilia created."),
    ("status", "node", "Show whether the node agent runs, and what it manages."),
    (
        "observe",
        "observe",
        "Show flows: each drop and each allowed new connection, with the rule that decided.",
    ),
    ("exec", "pods", "Run a command in the pod's network namespace; its exit code is passed through."),
    (
        "logs",
        "pods",
        "Print the pod's workload log (the built-in server's access log, or its command's output).",
    ),
    ("trace", "trace", "Trace a flow offline: each side's verdict and the rule that decided it."),
    ("validate", "validate", "Validate policies and objects as kubectl (strict) and Cilium 1.18 would."),
    ("verify", "verify", "Verify expected verdicts; each mismatch is printed with its trace."),
    ("version", "version", "Print cilia's version and the Cilium release whose semantics it follows."),
    ("bpf", "bpf", "Inspect the kernel datapath (pinned eBPF maps)."),
    ("node", "cluster", "The nodes of a several-node lab (cilia up --nodes N)."),
    ("dns", "dns", "The lab's DNS server (a world host) and its A records."),
    ("policy", "policy", "Policy from what the node observed."),
    ("svc", "svc", "Services as the datapath load-balances them."),
    ("world", "world", "World hosts: servers and clients outside the cluster (198.19.0.0/16)."),
)


def command_modules() -> list[str]:
    """Every module of :mod:`cilia.cli.commands` that may register commands (``_name`` are helpers)."""
    import pkgutil  # not for `cilia --help`, which reads the table only

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def module_of(command: str) -> str | None:
    """The module that registers ``command`` (``None``: not in the table)."""
    return next((module for name, module, _ in COMMANDS if name == command), None)
