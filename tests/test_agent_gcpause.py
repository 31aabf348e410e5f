"""The agent's collector settling: after settle() a collection does not walk the state built before
it (frozen), cyclic garbage made later is still collected, and every THAW_EVERY-th settle thaws the
frozen generation so garbage cycles among frozen objects are not kept forever."""

from __future__ import annotations

import gc

from cilia.agent import gcpause


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_freezes_state_and_still_collects_new_cycles() -> None:
    try:
        state = [Node() for _ in range(1000)]
        gcpause.settle()
        assert gc.get_freeze_count() >= len(state)
        Node()  # garbage with a cycle, made after the freeze
        assert gc.collect() >= 1
        frozen_then = gc.get_freeze_count()
        state.clear()  # frozen cycles, now garbage: kept until a thaw
        gcpause._settles[0] = gcpause.THAW_EVERY - 1
        gcpause.settle()
        assert gc.get_freeze_count() < frozen_then - 900
    finally:
        gc.unfreeze()
        gc.callbacks[:] = [cb for cb in gc.callbacks if cb is not gcpause._watch]
