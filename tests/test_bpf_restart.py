"""Crash behaviour: the owning process is killed with SIGKILL in the middle of a policy sync; the
programs stay attached and keep enforcing, an established connection keeps working, and a new
process re-attaches (atomic replace) and reconciles the pinned state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_bpf import test_pin_root
from helpers_netns import GATEWAY, probe_cmd, routed_pods

from cilia.datapath.bpf import loader
from cilia.datapath.bpf.sync import Datapath

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
OWNER = Path(__file__).resolve().parent / "helpers_owner.py"
FRONT, BACK, OTHER = 1001, 1002, 1003
TCP, ING, EG = 6, 0, 1
ALLOW_EGRESS = [[[0, EG, 0, 0, 0], False, "allow-egress"]]
STATE_A = [
    [[FRONT, ING, TCP, 8080, 16], False, "http"],
    [[FRONT, ING, TCP, 7000, 16], False, "echo"],
    [[OTHER, ING, TCP, 8080, 16], True, "deny-other"],
    *ALLOW_EGRESS,
]
STATE_B = [*STATE_A, [[FRONT, ING, TCP, 81, 16], False, "b81"], [[OTHER, ING, TCP, 81, 16], False, "b81o"],
           [[0, ING, TCP, 82, 16], False, "b82"], [[OTHER, ING, TCP, 83, 16], True, "b83"]]

ECHO_SERVER = (
    "import socket,sys,threading\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((sys.argv[1],7000));s.listen()\n"
    "def h(c):\n"
    " while (d:=c.recv(100)):\n  c.sendall(d)\n"
    "while True:\n c,_=s.accept();threading.Thread(target=h,args=(c,),daemon=True).start()\n"
)
# one established connection: a byte every 50 ms, each echoed within 1 s, for argv[2] seconds
ECHO_CLIENT = (
    "import socket,sys,time,json\n"
    "c=socket.create_connection((sys.argv[1],7000),2);c.settimeout(1);ok=fail=0\n"
    "end=time.monotonic()+float(sys.argv[2])\n"
    "while time.monotonic()<end:\n"
    " try:\n  c.sendall(b'x');ok+=c.recv(1)==b'x'\n"
    " except OSError:\n  fail+=1\n"
    " time.sleep(0.05)\n"
    "print(json.dumps([ok,fail]))\n"
)


def owner(spec: dict, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(OWNER), json.dumps({**spec, "mode": mode})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_kill_9_mid_sync_then_restart_reconciles(tmp_path: Path) -> None:
    pin_root = test_pin_root()
    procs: list[subprocess.Popen] = []
    with routed_pods(3) as (front, back, other):
        try:
            spec = {
                "pin_root": pin_root, "state_dir": str(tmp_path / "state"),
                "ipcache": [[f"{GATEWAY}/32", 1], [f"{front.ip}/32", FRONT], [f"{back.ip}/32", BACK],
                            [f"{other.ip}/32", OTHER]],
                "endpoints": [[front.ifindex, 11, FRONT], [back.ifindex, 12, BACK],
                              [other.ifindex, 13, OTHER]],
                "static": [[11, ALLOW_EGRESS], [13, ALLOW_EGRESS]],
                "a": STATE_A, "b": STATE_B, "backend": 12,
            }
            back.spawn("python3", "-c", ECHO_SERVER, back.ip)
            back.spawn("python3", "-m", "http.server", "8080", "--bind", back.ip)
            first = owner(spec, "churn")
            procs.append(first)
            assert first.stdout is not None and first.stdout.readline().strip() == "ready", first.stderr
            ids_before = loader.attached(back.ifindex)
            time.sleep(0.3)  # servers up
            conn = front.spawn("python3", "-c", ECHO_CLIENT, back.ip, "4.5")
            # stable flows: front→8080 and →7000 allowed in A and B; other→8080 and front→9000 denied in both
            fprobe = front.spawn(*probe_cmd([(back.ip, 8080), (back.ip, 9000)], wait_s=0.3, duration_s=4))
            oprobe = other.spawn(*probe_cmd([(back.ip, 8080)], wait_s=0.3, duration_s=4))
            time.sleep(1.0)
            os.kill(first.pid, signal.SIGKILL)  # the owner spends nearly all its time inside a sync
            first.wait()
            assert loader.attached(back.ifindex) == ids_before  # still attached, nothing swapped
            time.sleep(1.0)
            second = owner(spec, "reconcile")
            procs.append(second)
            out, err = second.communicate(timeout=60)
            assert second.returncode == 0, err
            reconciled = json.loads(out)
            ids_after = loader.attached(back.ifindex)
            f_rounds, o_rounds = (json.loads(p.communicate(timeout=30)[0]) for p in (fprobe, oprobe))
            ok, fail = json.loads(conn.communicate(timeout=30)[0])
            print(f"restart: {len(f_rounds) + len(o_rounds)} probe rounds, established connection "
                  f"{ok} echoes ok / {fail} failed")
            assert [r for r in f_rounds if r != [True, False]] == []
            assert [r for r in o_rounds if r != [False]] == []
            assert len(f_rounds) >= 5 and len(o_rounds) >= 5
            assert (fail, ok > 50) == (0, True)
            assert sorted(reconciled) == sorted([k, deny] for k, deny, _ in STATE_B)
            assert all(ids_after[n] not in (None, ids_before[n]) for n in ids_after)  # replaced, not removed
        finally:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
            cleanup = Datapath(pin_root=pin_root, state_dir=tmp_path / "state")
            cleanup.teardown()
    assert not Path(pin_root).exists()
