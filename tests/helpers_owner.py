"""A datapath owner process for the crash test: ``python helpers_owner.py SPEC_JSON``.

mode "churn": open the pins, attach every pod, sync state A, print "ready", then flip the backend
between states A and B forever with 10 ms between map operations (so a SIGKILL lands mid-sync).
mode "reconcile": open, re-attach (atomic replace), full sync to state B, print the backend's
policy map as JSON and exit without tearing anything down.
"""

from __future__ import annotations

import json
import sys
import time

from cilia.datapath.bpf.sync import Datapath
from cilia.policy.types import Entry, Key, RuleRef


def state(rows: list[list]) -> dict[Key, Entry]:
    return {Key(*k): Entry(deny, frozenset({RuleRef("CiliumNetworkPolicy", "default", name, "ingress", 0)}))
            for k, deny, name in rows}


def main() -> None:
    spec = json.loads(sys.argv[1])
    dp = Datapath(pin_root=spec["pin_root"], state_dir=spec["state_dir"]).open()
    for prefix, ident in spec["ipcache"]:
        dp.upsert_ipcache(prefix, ident)
    for ifindex, ep, ident in spec["endpoints"]:
        dp.attach(ifindex, ep, ident)
    for ep, rows in spec["static"]:
        dp.set_policy(ep, state(rows))
    a, b, back = state(spec["a"]), state(spec["b"]), spec["backend"]
    if spec["mode"] == "reconcile":
        dp.set_policy(back, b)
        print(json.dumps([[list(e.key), e.deny] for e in dp.policy_entries(back)]), flush=True)
        dp.close()
        return
    dp.set_policy(back, a)
    print("ready", flush=True)
    m = dp.policy.m
    real_update, real_delete = m.update, m.delete

    def slow_update(*args: object) -> None:
        real_update(*args)  # type: ignore[arg-type]
        time.sleep(0.01)

    def slow_delete(*args: object) -> bool:
        r = real_delete(*args)  # type: ignore[arg-type]
        time.sleep(0.01)
        return r

    m.update, m.delete = slow_update, slow_delete  # type: ignore[method-assign]
    cur, nxt = a, b
    while True:
        dp.apply_diff(back, cur, nxt)
        cur, nxt = nxt, cur


if __name__ == "__main__":
    main()
