"""The datapath's C sources: every file in the directory is part of the build hash (a header left out
would let a stale cached object survive its change) and ships with the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

from cilia.datapath.bpf import build

ROOT = Path(__file__).resolve().parent.parent


def test_every_source_file_is_hashed() -> None:
    on_disk = {p.name for p in build.SRC_DIR.iterdir() if p.suffix in (".c", ".h")}
    assert set(build.SOURCES) == on_disk
    assert build.MAIN in build.SOURCES


def test_every_source_file_ships() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["cilia.datapath.bpf"]
    assert all(any(Path(name).match(p) for p in patterns) for name in build.SOURCES)


def test_each_header_compiles_on_its_own(tmp_path: Path) -> None:
    """Headers include what they use (a split by concern, not one file cut in pieces)."""
    import shutil
    import subprocess

    import pytest

    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang not installed")
    for name in build.SOURCES:
        if not name.endswith(".h"):
            continue
        unit = tmp_path / f"only-{name}.c"
        unit.write_text(f'#include "{build.SRC_DIR / name}"\n')
        proc = subprocess.run([clang, *build.CFLAGS, "-c", str(unit), "-o", str(tmp_path / "x.o")],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{name}:\n{proc.stderr}"
