"""``make demo`` / ``python3 -m cilia.demo``: the seed tutorial ("Cilium's endpoint policies"), live.

A narrated run on this machine with cilia in place of kubectl and the tutorial's own YAML files:
real pods (network namespaces), real curl, packets dropped by the kernel (eBPF). Every step prints
its command and result and checks the result against what the story says; the run exits non-zero
if any step disagrees, and always removes the node it created (``cilia down``), also on failure.

The demo uses a node of its own (state in a temporary directory, its own bpffs pin directory), so
it does not touch a node you may be running with ``cilia up``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"
CURL = ["curl", "-s", "--max-time", "2"]
TIMEOUT_EXIT = 28  # curl: operation timed out (the SYN was dropped)


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Demo:
    env: dict[str, str]
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    failures: list[str] = field(default_factory=list)
    steps: int = 0

    def say(self, text: str) -> None:
        self.console.print()
        self.console.print(Text(text, style="bold cyan"))

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="italic"))

    def cilia(
        self,
        *args: str,
        expect: int | None = 0,
        contains: str | None = None,
        show: bool = True,
        why: str = "",
    ) -> Result:
        """Run ``cilia ARGS`` and check its exit code (and output) against the story."""
        shown = "cilia " + " ".join(_short(a) for a in args)
        if show:
            self.console.print(Text("$ " + shown, style="bold green"))
        proc = subprocess.run(
            [sys.executable, "-m", "cilia.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if show:
            body = (proc.stdout + proc.stderr).rstrip()
            if body:
                self.console.print(Text(body))
            if not proc.stdout.strip() and not proc.stderr.strip() and "exec" in args:
                self.console.print(Text(f"(exit code {proc.returncode})", style="dim"))
        self.steps += 1
        bad = []
        if expect is not None and proc.returncode != expect:
            bad.append(f"exit code {proc.returncode}, the story says {expect}")
        if contains is not None and contains not in proc.stdout + proc.stderr:
            bad.append(f"output lacks {contains!r}")
        if bad:
            msg = f"step `{shown}`: " + "; ".join(bad) + (f" ({why})" if why else "")
            self.failures.append(msg)
            self.console.print(Text("✗ " + msg, style="bold red"))
        elif show and why:
            self.console.print(Text("✓ " + why, style="green"))
        return res

    def curl(self, src: str, ip: str, port: int = 80, *, works: bool, why: str) -> Result:
        url = f"http://{ip}" if port == 80 else f"http://{ip}:{port}"
        return self.cilia(
            "exec",
            src,
            "--",
            *CURL,
            url,
            expect=0 if works else TIMEOUT_EXIT,
            contains="Server name:" if works else None,
            why=why,
        )

    def pods(self, namespace: str = "default") -> dict[str, str]:
        res = self.cilia("get", "pods", "-n", namespace, "-o", "json", show=False)
        items = json.loads(res.out or '{"items": []}')["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("podIP", "") for i in items}

    def last_drop(self) -> None:
        """Show the kernel's drop event for the last curl, as the agent decoded it."""
        from cilia.agent.client import AgentClient

        try:
            flows = AgentClient(Path(self.env["CILIA_RUN_DIR"]) / "cilia.sock").flows(0, 100000)["flows"]
        except Exception as e:  # the demo goes on; this is an illustration
            self.note(f"(no flow events: {e})")
            return
        drops = [f for f in flows if f["verdict"] == "DROPPED"]
        if not drops:
            self.failures.append("no drop event was recorded by the datapath")
            return
        from cilia.observe.render import compact
        from cilia.observe.source import flow_from_record

        # the same line `cilia observe` prints: who, what, and the rule that decided
        self.console.print(Text("  kernel event: " + compact(flow_from_record(drops[-1])), style="yellow"))


def _short(arg: str) -> str:
    return str(Path(arg).relative_to(SEED.parent.parent)) if arg.startswith(str(SEED.parent)) else arg


def seed(name: str) -> str:
    return str(SEED / name)


def story(d: Demo) -> None:
    d.say("1. Start a node: the agent, eBPF programs and maps, pods as network namespaces.")
    d.cilia("up", "--node-index", d.env["CILIA_DEMO_NODE"], why="the node is up")

    d.say("2. Two identical deployments, app-a and app-b, each a simple web server (the tutorial's files).")
    d.cilia("apply", "-f", seed("app-a.yaml"), "-f", seed("app-b.yaml"))
    d.cilia("get", "pods", "-o", "wide")
    pods = d.pods()
    a = sorted(p for p in pods if p.startswith("app-a-"))
    b = sorted(p for p in pods if p.startswith("app-b-"))
    if len(a) != 2 or len(b) != 2:
        d.failures.append(f"expected 2+2 pods, got {sorted(pods)}")
        return
    a0, a1, b0 = a[0], a[1], b[0]

    d.say("3. No policy yet: app-a reaches app-b.")
    d.curl(a0, pods[b0], works=True, why="no policy selects the pods: everything is allowed")

    d.say("4. The tutorial's deny-a-to-b.yaml. cilia reads it the way kubectl + Cilium would:")
    d.cilia(
        "apply",
        "-f",
        seed("deny-a-to-b.yaml"),
        expect=1,
        contains='unknown field "spec.deny"',
        why="`deny:` is not a Cilium field; kubectl refuses it (or prunes it, and nothing is denied)",
    )
    d.note("The fix: egressDeny (to… peers) plus enableDefaultDeny egress:false, so only app-b is cut:")
    d.cilia("validate", "--fix", "-f", seed("deny-a-to-b.yaml"), contains="egressDeny")
    d.cilia("apply", "--fix", "-f", seed("deny-a-to-b.yaml"))

    d.say("5. Now the curl from app-a to app-b times out: the kernel drops the SYN.")
    d.curl(a0, pods[b0], works=False, why="dropped by the egressDeny (reason 181)")
    d.last_drop()
    d.curl(b0, pods[a0], works=True, why="the other direction is not denied")
    d.note("Which rule decided? The same question, offline, from the manifests:")
    d.cilia(
        "trace",
        "-f",
        seed("app-a.yaml"),
        "-f",
        seed("app-b.yaml"),
        "-f",
        seed("deny-a-to-b-fixed.yaml"),
        "--from",
        f"default/{a0}",
        "--to",
        f"default/{b0}",
        "--port",
        "80/TCP",
        expect=1,
        contains="deny-app-a-to-app-b",
        why="trace names the denying rule",
    )

    d.say("6. Label one app-a pod access=frontend (it gets a new identity).")
    d.cilia("label", "pod", a0, "access=frontend")
    d.cilia("get", "pods")

    d.say("7. allow-frontend-to-b.yaml. Read it closely: the subject is the frontend pod, and the rule is")
    d.note(
        "   INGRESS from app-b on 80/TCP. It lets app-b into the frontend pod, not the frontend out to app-b."
    )
    d.cilia("apply", "-f", seed("allow-frontend-to-b.yaml"))
    d.curl(b0, pods[a0], works=True, why="app-b -> frontend:80 is what the policy allows")
    d.curl(
        a1,
        pods[a0],
        works=False,
        why="any other ingress to the frontend pod is now denied (the policy turned on ingress default deny)",
    )
    d.last_drop()
    d.curl(
        a0,
        pods[b0],
        works=False,
        why="the tutorial says this now works; it cannot: a deny always wins, and this policy is ingress",
    )
    d.cilia("describe", "pod", a0, contains="allow-frontend-to-app-b")

    d.say("8. The corrected intent: remove the deny; allow EGRESS from the frontend pods to app-b:80.")
    d.cilia("delete", "cnp", "deny-app-a-to-app-b")
    d.cilia("apply", "-f", seed("allow-frontend-egress-to-b.yaml"))
    d.curl(a0, pods[b0], works=True, why="frontend -> app-b:80 allowed by the egress rule")
    d.curl(
        a0,
        pods[b0],
        8080,
        works=False,
        why="anything else the frontend sends is dropped (egress default deny), not refused",
    )

    d.say(
        "9. The tutorial's other example: in namespace prod, role=backend may only talk to role=database "
        "on 5432/TCP."
    )
    d.cilia("apply", "-f", seed("prod-backend-to-database.yaml"))
    prod = d.pods("prod")
    backend = sorted(p for p in prod if p.startswith("backend-"))
    database = sorted(p for p in prod if p.startswith("database-"))
    if not backend or not database:
        d.failures.append(f"expected backend and database pods in prod, got {sorted(prod)}")
        return
    d.cilia(
        "exec",
        "-n",
        "prod",
        backend[0],
        "--",
        *CURL,
        f"http://{prod[database[0]]}:5432",
        contains="Server name:",
        why="backend -> database:5432 allowed",
    )
    d.cilia(
        "exec",
        "-n",
        "prod",
        backend[0],
        "--",
        *CURL,
        f"http://{pods[b0]}",
        expect=TIMEOUT_EXIT,
        why="backend -> anything else is dropped",
    )
    d.cilia(
        "exec",
        "-n",
        "prod",
        database[0],
        "--",
        *CURL,
        f"http://{prod[backend[0]]}",
        contains="Server name:",
        why="no policy selects the backend for ingress: database -> backend works",
    )

    d.say("10. L7: app-b takes only GETs from app-a pods on port 80, each request decided by the proxy.")
    d.cilia("apply", "-f", str(SEED.parent / "l7" / "app-b-http-get.yaml"))
    d.cilia(
        "exec", a0, "--", *CURL, f"http://{pods[b0]}/",
        contains="Server name:", why="GET / matches the HTTP rule: the proxy forwards it",
    )  # fmt: skip
    d.cilia(
        "exec", a0, "--", *CURL, "-X", "POST", f"http://{pods[b0]}/",
        contains="Access denied", why="POST is not in the rule: the proxy answers 403 (Cilium's answer)",
    )  # fmt: skip
    d.cilia("observe", "--protocol", "http", "--last", "2", contains="http-request DENIED",
            why="each request is an L7 flow, with the rule that decided it")  # fmt: skip


def _free_node_index(wanted: int) -> int:
    """``wanted``, unless the node you run with ``cilia up`` uses that pod range."""
    from cilia.agent.client import AgentClient
    from cilia.agent.config import AgentConfig

    yours = AgentConfig.resolve().with_saved()
    if AgentClient(yours.socket_path, timeout=2).is_up() and yours.node_index == wanted:
        return (wanted + 1) % 15
    return wanted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m cilia.demo", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--node-index",
        type=int,
        default=int(os.environ.get("CILIA_DEMO_NODE", "0")),
        help="pods get 198.18.<16·i>.0/20 (default 0)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="leave the node up at the end (remove it with `cilia down --purge` and the printed environment)",
    )
    args = ap.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    if os.geteuid() != 0:
        console.print("the demo needs root (network namespaces, eBPF): run `sudo make demo`")
        return 2
    missing = [t for t in ("curl", "nsenter", "clang") if shutil.which(t) is None]
    if missing:
        console.print(f"missing tools: {', '.join(missing)} (make setup-system installs them)")
        return 2
    if args.node_index is None:
        args.node_index = _free_node_index(int(os.environ.get("CILIA_DEMO_NODE", "0")))
    base = Path(tempfile.mkdtemp(prefix="cilia-demo-"))
    env = {
        **os.environ,
        "CILIA_STATE_DIR": str(base / "state"),
        "CILIA_RUN_DIR": str(base / "run"),
        "CILIA_PIN_ROOT": f"/sys/fs/bpf/cilia/demo-{os.getpid()}",
        "CILIA_DEMO_NODE": str(args.node_index),
    }
    d = Demo(env, console)
    console.print(
        Panel.fit(
            'cilia: the tutorial "Cilium\'s endpoint policies", live on this machine.\n'
            f"node state {base}; commands run with CILIA_STATE_DIR/CILIA_RUN_DIR/CILIA_PIN_ROOT set to it.",
            style="bold",
        )
    )
    t0 = time.monotonic()
    try:
        story(d)
    except Exception as e:  # report, then clean up like any other failure
        d.failures.append(f"{type(e).__name__}: {e}")
    finally:
        if not args.keep:
            d.say("11. Tear the node down: every namespace, link, pin, socket and process goes.")
            d.cilia("down", "--purge", contains="nothing left behind", why="nothing left behind")
            if d.failures:
                console.print(f"logs kept for a look: {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
        else:
            console.print(
                f"node kept: export CILIA_STATE_DIR={env['CILIA_STATE_DIR']} "
                f"CILIA_RUN_DIR={env['CILIA_RUN_DIR']} CILIA_PIN_ROOT={env['CILIA_PIN_ROOT']}"
            )
    took = time.monotonic() - t0
    console.print()
    if d.failures:
        console.print(
            Text(f"{len(d.failures)} step(s) did not go as the story says ({took:.0f}s):", style="bold red")
        )
        for f in d.failures:
            console.print(Text(f"  - {f}", style="red"))
        return 1
    console.print(Text(f"all {d.steps} steps went as the story says, in {took:.0f}s.", style="bold green"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
