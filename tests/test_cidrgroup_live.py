"""CiliumCIDRGroup and spec.log on a live node (root): world hosts in 198.19.14.0/24 against an
egressDeny through ``cidrGroupRef`` and an allow through ``cidrGroupSelector`` with an ``except``; the
group is applied, changed and deleted while the policy stays as it was applied; the flows name the
deciding rules' ``spec.log`` values (``policy_log``). Every live verdict is compared with
the offline engine (``cilia trace`` on the same manifests). One node for the module (index 14: its
own pod range, gateway and world hosts, so it runs beside the other live tests)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cilia.agent import manifests
from cilia.agent.client import AgentClient
from cilia.agent.endpoints import EndpointTable
from cilia.analyze.cluster import analyse_paths
from cilia.analyze.peers import parse_port
from cilia.analyze.trace import trace
from cilia.cli.common import open_node_store, wait_for_agent
from cilia.store import Kind
from tests.helpers_world import CURL, LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 14
CLIENT = {"matchLabels": {"app": "client"}}


def group(name: str, cidrs: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": {"externalCIDRs": cidrs}}


class FastNode(LiveNode):
    """The world tests' node, with its applies, curls and traces done in this process (each ``cilia``
    subprocess costs seconds of interpreter start on a loaded machine)."""

    def apply(self, *docs: dict[str, Any]) -> Path:
        self._n += 1
        path = self.manifests / f"{self._n:02d}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        with open_node_store(self.cfg) as store:
            out = manifests.apply(store, [str(path)])
        assert out.ok, out.report.errors
        assert wait_for_agent(self.cfg, out.revision, timeout=60, quiet=True)
        return path

    def delete(self, path: Path) -> None:
        with open_node_store(self.cfg) as store:
            out = manifests.delete(store, [str(path)])
        assert out.ok, out.report.errors
        assert wait_for_agent(self.cfg, out.revision, timeout=60, quiet=True)
        path.unlink()

    def curl_from_pod(self, pod_name: str, ip: str, port: int = 80) -> bool:
        eps = {e.pod.name: e for e in EndpointTable(self.cfg.endpoints_path)}
        cmd = ["ip", "netns", "exec", eps[pod_name].netns, *CURL[:-2], "--max-time", "1", f"http://{ip}:{port}/"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return out.returncode == 0 and out.stdout == "200"

    def flows(self, since: int = 0) -> list[dict[str, Any]]:
        return list(AgentClient(self.cfg.socket_path).flows(since)["flows"])

    def last_seq(self) -> int:
        return max((f["seq"] for f in self.flows()), default=0)

    def traces(self, src: str, dsts: list[str]) -> list[bool]:
        analysis = analyse_paths(sorted(self.manifests.glob("*.yaml")))
        return [trace(analysis, src, d, parse_port("80/TCP")).allowed for d in dsts]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastNode]:
    n = FastNode(tmp_path_factory.mktemp("cidrgroup"), NODE_INDEX)
    yield from live_node(n.base, n)


@pytest.fixture(scope="module")
def hosts(node: FastNode) -> dict[str, str]:
    """Two world hosts serving 80/TCP, shared by the module's tests (each ``cilia world add`` costs)."""
    return {"w-a": node.world_add("w-a", 10, "80/TCP"), "w-b": node.world_add("w-b", 20, "80/TCP")}


def _matrix(node: FastNode, client: str, targets: dict[str, str]) -> dict[str, tuple[bool, bool]]:
    """host -> (live, offline) for client -> host:80."""
    offline = node.traces(f"default/{client}", list(targets.values()))
    live = [node.curl_from_pod(client, ip) for ip in targets.values()]
    return {h: (lv, off) for h, lv, off in zip(targets, live, offline, strict=True)}


def test_deny_through_a_group_follows_the_group(node: FastNode, hosts: dict[str, str]) -> None:
    node.apply(pod("cg-client", {"app": "client"}))
    node.apply(
        cnp("world-ok", {"endpointSelector": CLIENT, "log": {"value": "world-ok"},
                         "egress": [{"toEntities": ["world"]}]}),
        cnp("deny-blocked", {"endpointSelector": CLIENT, "log": {"value": "blocked"},
                             "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]}),
    )
    # the group does not exist yet: its reference selects nothing
    assert _matrix(node, "cg-client", hosts) == {"w-a": (True, True), "w-b": (True, True)}
    first = node.apply(group("blocked", [f"{node.world}.0/28"]))
    since = node.last_seq()
    assert _matrix(node, "cg-client", hosts) == {"w-a": (False, False), "w-b": (True, True)}
    # the flows name the spec.log of the rule that decided (Hubble's policy_log), the drop's too
    logs = {(f["IP"]["destination"], f["verdict"]): f.get("policy_log") for f in node.flows(since)
            if f["traffic_direction"] == "EGRESS" and f["l4"].get("TCP", {}).get("destination_port") == 80}
    assert logs == {(hosts["w-a"], "DROPPED"): ["blocked"], (hosts["w-b"], "FORWARDED"): ["world-ok"]}
    # the group changes (kubectl apply of the new version); the policy is not applied again
    second = node.apply(group("blocked", [f"{node.world}.16/28"]))
    first.unlink()  # the offline view: only the group's current version
    assert _matrix(node, "cg-client", hosts) == {"w-a": (True, True), "w-b": (False, False)}
    node.delete(second)
    assert _matrix(node, "cg-client", hosts) == {"w-a": (True, True), "w-b": (True, True)}


def test_allow_through_a_group_selector_with_an_except(node: FastNode, hosts: dict[str, str]) -> None:
    node.apply(pod("cg-client2", {"app": "cg-client2"}))
    node.apply(
        group("partners", [f"{node.world}.0/24"], {"tier": "partner"}),
        cnp("to-partners", {"endpointSelector": {"matchLabels": {"app": "cg-client2"}}, "egress": [
            {"toCIDRSet": [{"cidrGroupSelector": {"matchLabels": {"tier": "partner"}},
                            "except": [f"{hosts['w-b']}/32"]}]}]}),
    )
    assert _matrix(node, "cg-client2", hosts) == {"w-a": (True, True), "w-b": (False, False)}


def test_a_service_destination_is_decided_per_backend(node: FastNode) -> None:
    """``cilia trace --to svc:default/web`` (offline) against curls through the ClusterIP (live): the
    backends that answer are exactly those whose translated flow the offline trace allows."""
    node.apply(pod("cg-client3", {"app": "cg-client3"}), pod("cg-web-a", {"app": "web", "track": "a"}),
               pod("cg-web-b", {"app": "web", "track": "b"}))
    node.apply(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}},
        cnp("web-in", {"endpointSelector": {"matchLabels": {"app": "web", "track": "a"}},
                       "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "cg-client3"}}],
                                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}),
        cnp("web-b-in", {"endpointSelector": {"matchLabels": {"app": "web", "track": "b"}},
                         "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "cg-client3"}}],
                                      "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}),
    )
    analysis = analyse_paths(sorted(node.manifests.glob("*.yaml")))
    result = trace(analysis, "default/cg-client3", "svc:default/web", parse_port("8080/TCP"))
    offline = {f.dst.pod: (f.port, f.allowed) for f in result.flows}
    # web-b's policy names the Service port, not the target port the datapath sees after translation
    assert offline == {"cg-web-a": (80, True), "cg-web-b": (80, False)} and not result.allowed

    ip = ""
    for _ in range(100):
        with open_node_store(node.cfg) as store:
            svc = store.get(Kind.SERVICES.key("default", "web"))
        ip = str(((svc.value if svc else {}).get("spec") or {}).get("clusterIP") or "")
        if ip:
            break
        time.sleep(0.1)
    assert ip, "the Service got no ClusterIP"
    eps = {e.pod.name: e for e in EndpointTable(node.cfg.endpoints_path)}
    loop = (f"for i in $(seq 12); do curl -s --max-time 1 http://{ip}:8080/ | grep '^Server name: ' "
            "|| echo FAILED; done")
    out = subprocess.run(["ip", "netns", "exec", eps["cg-client3"].netns, "sh", "-c", loop],
                         capture_output=True, text=True, timeout=60, check=False).stdout.splitlines()
    answered = {x.removeprefix("Server name: ") for x in out if x != "FAILED"}
    assert len(out) == 12 and answered == {"cg-web-a"} and "FAILED" in out, out
