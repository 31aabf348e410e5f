"""cilia trace imports what the trace needs (issue 15 item 2): not the agent, the store, the proxies,
numpy, the manifest fixer, typer, rich, pydantic or ruamel; the node's state directory is resolved
only when a question needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = "examples/seed/"
RUN = (
    "import sys\nfrom cilia.cli.main import main\nsys.argv = ['cilia', {args}]\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "import json\nprint(json.dumps(sorted(sys.modules)))"
)


def test_trace_on_the_seed_imports_only_what_it_needs() -> None:
    files = ", ".join(f"'-f', '{SEED}{f}.yaml'" for f in ("app-a", "app-b", "deny-a-to-b-fixed"))
    peers = "'--from', 'deployment:default/app-a', '--to', 'deployment:default/app-b', '--port', '80'"
    args = f"'trace', {files}, {peers}"
    out = subprocess.run([sys.executable, "-c", RUN.format(args=args)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "DENIED" in out and "cilia.analyze.trace" in loaded  # it did trace
    heavy = ("cilia.agent", "cilia.store", "cilia.proxy", "cilia.lab", "cilia.k8s.fix", "numpy", "pyroute2",
             "typer", "click", "rich",  # the fast path (cilia/cli/fastpath.py) parses trace's options
             "pydantic", "pydantic_core",  # the manifest models are records (cilia/k8s/record.py)
             "ruamel")  # manifests are read with libyaml (cilia/k8s/yamlread.py)
    assert not [m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy)]
    # what only other inputs or questions need, imported where used: a misspelt kind, a rule's log value
    # (stdlib); the L7 model and verdicts (an L7 rule or request), Services (a Service peer), the
    # every-port answer, port classes and deciding rules (no --port), the identity heap (ids given back);
    # OpenSSL's hashes (pod names hash with Python's own SHA-256)
    assert not loaded & {"difflib", "unicodedata", "heapq", "_hashlib", "cilia.policy.l7",
                         "cilia.analyze.l7verdict", "cilia.analyze.services", "cilia.analyze.every_port",
                         "cilia.analyze.portclasses", "cilia.analyze.deciding"}
