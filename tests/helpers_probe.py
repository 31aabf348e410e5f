"""Run inside a pod's netns: concurrent non-blocking TCP connects, JSON results on stdout.

A connect that completes or is refused got through the datapath (both ways); one still pending
after the wait was dropped.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
import time


def one_round(targets: list[tuple[str, int]], wait: float) -> list[bool]:
    socks = []
    for host, port in targets:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
    done = [False] * len(socks)
    deadline = time.monotonic() + wait
    pending = {s.fileno(): i for i, s in enumerate(socks)}
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, w, _ = select.select([], list(pending), [], left)
        for fd in w:
            i = pending.pop(fd)
            err = socks[i].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            done[i] = err in (0, errno.ECONNREFUSED)
    for s in socks:
        s.close()
    return done


def main() -> None:
    spec = json.loads(sys.argv[1])
    targets = [tuple(t) for t in spec["targets"]]
    out = []
    end = time.monotonic() + spec.get("duration", 0)
    while len(out) < spec["rounds"] or time.monotonic() < end:
        out.append(one_round(targets, spec["wait"]))  # type: ignore[arg-type]
        time.sleep(spec["interval"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
