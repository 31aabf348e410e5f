"""The agent's garbage collector, kept off the reconcile tail.

A node with hundreds of pods holds millions of long-lived objects (policies, selectors, MapStates);
a full (oldest-generation) collection walks all of them, and on this class of machine that is a
pause of hundreds of milliseconds in whichever thread allocated last — the reconcile loop, so a
label change waits for it. When the agent is ready, and again at each idle runtime check, it
collects (while nothing waits) and freezes what survives (``gc.freeze``: moved to a generation
collections skip; reference counting still frees it when it is replaced), so the collections that
run in the middle of a change walk only what was built since. Collections slower than ``SLOW_MS``
are logged, so a pause that remains is visible in the agent's log.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)
SLOW_MS = 50.0
# frozen objects that later become garbage in a reference cycle are not collected: every this many
# settles (~10 min of idle runtime checks) the frozen generation is thawed and collected once
THAW_EVERY = 60
_started: list[float] = []
_settles = [0]
_settling = [False]


def _watch(phase: str, info: dict[str, Any]) -> None:
    if _settling[0]:
        return  # settle's own collection runs while nothing waits: not a pause of anything
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        ms = (time.perf_counter() - _started[0]) * 1000
        if ms >= SLOW_MS:
            log.warning("garbage collection of generation %d took %.0f ms (%d objects collected)",
                        info.get("generation", -1), ms, info.get("collected", 0))


def settle() -> None:
    """Collect once, freeze what survives, watch later pauses (call it while nothing waits)."""
    _settles[0] += 1
    if _settles[0] % THAW_EVERY == 0:
        gc.unfreeze()
    _settling[0] = True
    try:
        gc.collect()
    finally:
        _settling[0] = False
    gc.freeze()
    if _watch not in gc.callbacks:
        gc.callbacks.append(_watch)
