"""Compile the datapath C sources with clang, cached by the hash of the sources and the command."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from cilia.datapath.errors import DatapathError

SRC_DIR = Path(__file__).resolve().parent
# every file the object is built from (all in this directory, so the cache hash covers each header)
SOURCES = ("datapath.c", "host.c", "cilia.h", "common.h", "maps.h", "parse.h", "metrics.h", "events.h",
           "policy.h", "conntrack.h", "lb.h", "lb6.h", "proxy.h", "guard.h", "parse6.h")
MAIN = "datapath.c"  # the pods' datapath; host.c is the host firewall's object (cilia.datapath.bpf.hostfw)
CFLAGS = ("-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I/usr/include/x86_64-linux-gnu")


class BuildError(DatapathError, RuntimeError):
    """The datapath could not be compiled (clang missing or the sources do not compile)."""


def cache_dir() -> Path:
    """``$CILIA_CACHE_DIR``, else ``~/.cache/cilia/bpf`` (root: ``/var/cache/cilia/bpf``)."""
    env = os.environ.get("CILIA_CACHE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/cilia/bpf")
    return Path.home() / ".cache" / "cilia" / "bpf"


def source_hash(src_dir: Path = SRC_DIR) -> str:
    """Content hash of every source file and the compiler flags."""
    h = hashlib.sha256(" ".join(CFLAGS).encode())
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (src_dir / name).read_bytes())
    return h.hexdigest()[:16]


def build(src_dir: Path = SRC_DIR, out_dir: Path | None = None, main: str = MAIN) -> Path:
    """Return the path of the object compiled from ``main``, compiling it only if the sources changed."""
    out_dir = out_dir or cache_dir()
    target = out_dir / f"{Path(main).stem}-{source_hash(src_dir)}.o"
    if target.exists():
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise BuildError("clang not found: the eBPF datapath is compiled at first use "
                         "(install it: apt-get install clang llvm, or run `make setup-system`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([clang, *CFLAGS, "-c", str(src_dir / main), "-o", str(tmp)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"clang failed to compile {src_dir / main}:\n{proc.stderr.strip()}")
    os.replace(tmp, target)  # atomic: concurrent builders never see a half-written object
    return target
