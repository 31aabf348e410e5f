"""The endpoint table's save reuses each unchanged endpoint's JSON row: what it writes stays exactly
the whole table's serialization after puts, updates and removals, and reads back the same."""

from __future__ import annotations

import json
from pathlib import Path

from cilia.agent.desired import PodKey
from cilia.agent.endpoints import Endpoint, EndpointTable


def test_saved_table_is_the_whole_table_after_every_change(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    t = EndpointTable(path)

    def check() -> None:
        want = [e.to_json() for e in t._by_id.values()]
        assert json.loads(path.read_text()) == want
        assert [e for e in EndpointTable(path)] == list(t)

    for i in range(1, 6):
        t.put(Endpoint(i, PodKey("ns", f"p{i}"), f"198.18.0.{i}", 10 + i, f"lxc{i}", f"cilia-n{i}", 100 + i,
                       ("k8s:app=a",)))
        check()
    t.update(PodKey("ns", "p3"), identity=777, labels=("k8s:app=b",))
    check()
    t.remove(PodKey("ns", "p1"))
    check()
    t.put(Endpoint(1, PodKey("ns", "p1"), "198.18.0.9", 19, "lxc9", "cilia-n9", 109, (), ip6="2001:2::9"))
    check()
    assert EndpointTable(path).get(PodKey("ns", "p3")).identity == 777  # type: ignore[union-attr]
