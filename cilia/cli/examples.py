"""Examples shown at the end of each command's help (``cilia COMMAND -h``), by command path.

:func:`add_examples` appends them (as the help's epilog) to a command whose own help has none; a
command that writes its examples in its docstring keeps them. tests/test_cli_conventions.py checks that
every command's help has examples.
"""

from __future__ import annotations

from typing import Any

EXAMPLES: dict[str, tuple[str, ...]] = {
    "apply": (
        "cilia apply -f examples/seed/",
        "cilia apply -f k8s/ -R --exclude charts --dry-run",
        "cilia apply -f policy.yaml --diff",
    ),
    "delete": (
        "cilia delete -f examples/seed/deny-a-to-b.yaml",
        "cilia delete cnp deny-app-a-to-app-b -n default",
    ),
    "audit": ("cilia audit on", "cilia audit on -n staging", "cilia audit off -o json"),
    "completion": (
        "source <(cilia completion bash)",
        "cilia completion fish > ~/.config/fish/completions/cilia.fish",
    ),
    "connectivity": ("cilia connectivity -f examples/seed/", "cilia connectivity -f k8s/ -R -o json"),
    "describe": ("cilia describe pod app-a-frontend", "cilia describe cnp deny-app-a-to-app-b -n default"),
    "diff": (
        "cilia diff -f old/ --against new/",
        "cilia diff --git main..HEAD k8s/",
        "cilia diff -f old/ --against new/ -o md --fail-on opened",
    ),
    "get": ("cilia get pods", "cilia get cnp -A", "cilia get identities -o json", "cilia get pods -o wide"),
    "label": ("cilia label pod app-a-frontend access=frontend", "cilia label pod app-a-frontend access-"),
    "lint": ("cilia lint -f policies/ -R", "cilia lint -f k8s/ -R -o sarif > cilia.sarif"),
    "agent": ("cilia agent --state-dir /tmp/cilia-state --run-dir /tmp/cilia-run",),
    "up": ("cilia up", "cilia up --nodes 3", "cilia up --datapath sim --state-dir /tmp/s --run-dir /tmp/r"),
    "down": ("cilia down", "cilia down --purge"),
    "status": ("cilia status", "cilia status -o json"),
    "observe": (
        "cilia observe --verdict DROPPED",
        "cilia observe --from-pod default/app-a --to-pod default/app-b -o json",
        "cilia observe --type l7 --http-status 403",
    ),
    "exec": ("cilia exec app-a-frontend -- curl -s http://app-b", "cilia exec -n prod db -- ss -ltn"),
    "logs": ("cilia logs app-b-7d9f-x2k4q", "cilia logs app-b-7d9f-x2k4q --tail 20"),
    "trace": (
        "cilia trace -f examples/seed/ --from deployment:default/app-a --to deployment:default/app-b "
        "--port 80",
    ),
    "validate": (
        "cilia validate -f examples/seed/",
        "cilia validate -f k8s/ -R --exclude charts -o json",
        "cilia validate -f examples/seed/deny-a-to-b.yaml --fix",
    ),
    "verify": ("cilia verify -f examples/seed/ --expect examples/seed/expectations.yaml",),
    "version": ("cilia version", "cilia version -o json", "cilia --version"),
    "bpf": ("cilia bpf policy get", "cilia bpf ct list", "cilia bpf metrics list"),
    "bpf policy": ("cilia bpf policy get", "cilia bpf policy get 12 -o json"),
    "bpf policy get": ("cilia bpf policy get", "cilia bpf policy get 12 -o json"),
    "bpf ipcache": ("cilia bpf ipcache list",),
    "bpf ipcache list": ("cilia bpf ipcache list", "cilia bpf ipcache list -o yaml"),
    "bpf ct": ("cilia bpf ct list", "cilia bpf ct list --all"),
    "bpf ct list": ("cilia bpf ct list", "cilia bpf ct list --all -o json"),
    "bpf endpoint": ("cilia bpf endpoint list",),
    "bpf endpoint list": ("cilia bpf endpoint list", "cilia bpf endpoint list -o json"),
    "bpf lxc": ("cilia bpf lxc list",),
    "bpf lxc list": ("cilia bpf lxc list", "cilia bpf lxc list -o json"),
    "bpf metrics": ("cilia bpf metrics list",),
    "bpf metrics list": ("cilia bpf metrics list", "cilia bpf metrics list -o json"),
    "node": ("cilia node list", "cilia node list -o json"),
    "node list": ("cilia node list", "cilia node list -o json"),
    "dns": ("cilia dns add api.example.com 198.19.0.10", "cilia dns list", "cilia dns cache"),
    "dns add": ("cilia dns add api.example.com 198.19.0.10",),
    "dns list": ("cilia dns list", "cilia dns list -o json"),
    "dns cache": ("cilia dns cache", "cilia dns cache -o json"),
    "policy": ("cilia policy from-flows --flows flows.jsonl > learned.yaml",),
    "policy from-flows": (
        "cilia observe -o json > flows.jsonl; cilia policy from-flows --flows flows.jsonl > learned.yaml",
        "cilia policy from-flows --flows flows.jsonl -n prod --since 1h",
    ),
    "svc": ("cilia svc list",),
    "svc list": ("cilia svc list", "cilia svc list -n prod -o json"),
    "world": (
        "cilia world add web --ip 198.19.0.10 --port 80",
        "cilia world list",
        "cilia world exec web -- curl -s 198.18.0.10",
    ),
    "world add": (
        "cilia world add web --ip 198.19.0.10 --port 80",
        "cilia world add ntp --ip 198.19.0.11 --port 123/UDP",
    ),
    "world list": ("cilia world list", "cilia world list -o json"),
    "world delete": ("cilia world delete web", "cilia world delete web ntp"),
    "world exec": ("cilia world exec web -- curl -s http://198.18.0.10/",),
}


def _has_examples(text: str | None) -> bool:
    return bool(text) and "example" in (text or "").lower()


def add_examples(command: Any, path: str) -> None:
    """Give ``command`` (found at ``path``, e.g. ``bpf ct``) and its sub-commands their examples."""
    examples = EXAMPLES.get(path)
    if examples and not _has_examples(command.help) and not _has_examples(command.epilog):
        # \b keeps the lines as they are in typer's and click's help
        command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)
    for name, sub in getattr(command, "commands", {}).items():
        add_examples(sub, f"{path} {name}")
