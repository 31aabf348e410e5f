"""tcx attachment: pinned links, an atomic program swap by a second loader (a restarted agent),
detach, and the move between clsact and tcx in both directions (never both missing)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers_bpf import private_datapath
from helpers_netns import routed_pods

from cilia.datapath.bpf import loader, tcx

pytestmark = pytest.mark.root


def _qdisc(dev: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True,
                          check=True).stdout


def test_tcx_links_pinned_swapped_and_moved_to_and_from_clsact(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CILIA_ATTACH", raising=False)
    with routed_pods(1, first_host=150) as (pod,), private_datapath(tmp_path) as dp:
        assert dp.coll is not None
        ifx = pod.ifindex
        first = loader.attach(dp.coll, ifx)
        assert loader.attach_mode() == "tcx" and tcx.supported()
        assert loader.attached(ifx) == first
        assert "clsact" not in _qdisc(pod.host_if)
        pins = {n: loader.link_pin(dp.pin_root, ifx, n) for n in loader.TCX_POINTS}
        assert all(os.path.exists(p) for p in pins.values())
        links_before = {n: tcx.query(ifx, p) for n, p in loader.TCX_POINTS.items()}
        assert all(len(v) == 1 for v in links_before.values())

        # a second load of the object (new program ids) updates the same pinned links in place
        second = loader.load(dp.pin_root, dp.object_path)
        try:
            ids = loader.attach(second, ifx)
        finally:
            second.close()
        assert ids != first and loader.attached(ifx) == ids
        for name, point in loader.TCX_POINTS.items():
            (prog, link), = tcx.query(ifx, point)
            assert link == links_before[name][0][1] and prog == ids[name]

        # to clsact (an older agent's way): the filters go in, then the links go out
        monkeypatch.setenv("CILIA_ATTACH", "tc")
        tc_ids = loader.attach(dp.coll, ifx)
        assert all(tcx.query(ifx, p) == [] for p in loader.TCX_POINTS.values())
        assert not any(os.path.exists(p) for p in pins.values())
        assert "clsact" in _qdisc(pod.host_if) and loader.attached(ifx) == tc_ids

        # and back to tcx: the clsact qdisc is removed once the links are in
        monkeypatch.delenv("CILIA_ATTACH")
        assert loader.attach(dp.coll, ifx) == first
        assert "clsact" not in _qdisc(pod.host_if)

        assert loader.detach(ifx, destroy_qdisc=True, pin_root=dp.pin_root)
        assert loader.attached(ifx) == {"from_container": None, "to_container": None}
        assert not any(os.path.exists(p) for p in pins.values())
        assert not loader.detach(ifx, destroy_qdisc=True, pin_root=dp.pin_root)
