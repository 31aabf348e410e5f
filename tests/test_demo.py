"""`make demo` runs the seed's story live; it must go as the story says (its own checks)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.root
def test_demo_runs_the_story() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cilia.demo"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "went as the story says" in res.stdout
    assert "denied by CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]" in res.stdout
    assert "default deny by CiliumNetworkPolicy default/allow-frontend-to-app-b" in res.stdout
