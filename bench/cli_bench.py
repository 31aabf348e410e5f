"""Start-up time of the ``cilia`` command, as ratios to ``python3 -c pass`` measured in the same run.

Four commands, each run as a fresh process, interleaved round by round (so a machine that gets busier
during the run slows all of them alike); the median wall time of each is compared with the median of
the baseline:

* baseline: ``python -c pass`` (the same interpreter);
* help: ``cilia --help``;
* validate: ``cilia validate -f examples/seed/deny-a-to-b-fixed.yaml`` (one small policy file);
* trace: ``cilia trace`` on the seed story's deny step (app-a, app-b, the corrected deny).

``cilia`` is the console script next to the interpreter when there is one (what users run), else
``python -m cilia``. Every command's exit status is checked, so a broken command cannot look fast.
The commands run with Python writing bytecode (``PYTHONDONTWRITEBYTECODE`` left out of their
environment), so the warm-up run leaves the ``.pyc`` files an installed cilia has: otherwise every
run compiles cilia's sources again (~0.1–0.5 s here), which users do not pay.
Each line also gives the median CPU time (user + system) of the command's process and its ratio to the
baseline's: on a loaded machine the wall times of both sides stretch unevenly, the CPU times much less.
cilia keeps no cache between runs, so every run is what a user meets after the first (bytecode
written): there are no separate cold and warm figures. The last line is exactly
``summary: help_ratio=X validate_ratio=X trace_ratio=X`` (wall-time medians); the line before it, ``cpu:``,
gives the same ratios of CPU time.
Targets (issue 15): help ≤ 2, validate ≤ 3, trace ≤ 4.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = "examples/seed/"


def cilia_command() -> list[str]:
    script = Path(sys.executable).parent / "cilia"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cilia"]


def commands() -> dict[str, tuple[list[str], int]]:
    """name -> (argv, expected exit status)."""
    cilia = cilia_command()
    return {
        "baseline": ([sys.executable, "-c", "pass"], 0),
        "help": ([*cilia, "--help"], 0),
        "validate": ([*cilia, "validate", "-f", SEED + "deny-a-to-b-fixed.yaml"], 0),
        "trace": (
            [
                *cilia,
                "trace",
                "-f",
                SEED + "app-a.yaml",
                "-f",
                SEED + "app-b.yaml",
                "-f",
                SEED + "deny-a-to-b-fixed.yaml",
                "--from",
                "deployment:default/app-a",
                "--to",
                "deployment:default/app-b",
                "--port",
                "80",
            ],
            1,  # the corrected deny denies: exit 1
        ),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children waited for so far
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], expected: int) -> tuple[float, float]:
    """One run: (wall seconds, CPU seconds the process used: user + system)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu  # runs are one at a time: the delta is this process's
    if proc.returncode != expected:
        raise SystemExit(
            f"{' '.join(argv)}: exit {proc.returncode}, expected {expected}\n{proc.stdout}{proc.stderr}"
        )
    return elapsed, cpu


@contextlib.contextmanager
def rounds_progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr when it is a terminal (nothing when piped: the output stays the report)."""
    if not sys.stderr.isatty():
        yield lambda name: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("cli start-up", total=total)
        yield lambda name: bar.update(task, advance=1, description=f"cli start-up: {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command (median taken)")
    args = parser.parse_args()
    cmds = commands()
    times: dict[str, list[float]] = {name: [] for name in cmds}
    cpus: dict[str, list[float]] = {name: [] for name in cmds}
    for argv, expected in cmds.values():  # warm the file cache and .pyc files first
        run_once(argv, expected)
    with rounds_progress(args.rounds * len(cmds)) as advance:
        for _ in range(args.rounds):
            for name, (argv, expected) in cmds.items():
                wall, cpu = run_once(argv, expected)
                times[name].append(wall)
                cpus[name].append(cpu)
                advance(name)
    medians = {name: statistics.median(t) for name, t in times.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpus.items()}
    base, cpu_base = medians["baseline"], cpu_medians["baseline"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}; cilia keeps no cache: cold and warm runs are alike")
    for name, med in medians.items():
        spread = f"min {min(times[name]) * 1000:.0f} ms, max {max(times[name]) * 1000:.0f} ms"
        print(f"{name:9} median {med * 1000:6.0f} ms  ratio {med / base:5.2f}  ({spread})  "
              f"cpu {cpu_medians[name] * 1000:4.0f} ms  ratio {cpu_medians[name] / cpu_base:5.2f}")
    print(
        f"cpu: help_ratio={cpu_medians['help'] / cpu_base:.2f} "
        f"validate_ratio={cpu_medians['validate'] / cpu_base:.2f} "
        f"trace_ratio={cpu_medians['trace'] / cpu_base:.2f}"
    )
    print(
        f"summary: help_ratio={medians['help'] / base:.2f} validate_ratio={medians['validate'] / base:.2f} "
        f"trace_ratio={medians['trace'] / base:.2f}"
    )

if __name__ == "__main__":
    main()
