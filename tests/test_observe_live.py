"""Live (root): Observe on a running node through the CLI, as a user would. Drops name the deny rule
or the policy that turned default deny on, allowed new connections name their allow rule; node
audit mode (``cilia audit on``) and a policy annotated ``cilia.io/audit: "true"`` let the drop through
and report AUDIT naming the rule; the flow log survives an agent restart; the metrics endpoint counts
the drops; the ``cilia observe`` filters on live flows.

One node for the module on its own state/run/pin directories and pod range (node index 5:
198.18.80.0/20), torn down (and checked empty) by ``helpers_world.live_node``'s teardown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers_world import LiveNode, _links, _processes, cnp, pod

pytestmark = pytest.mark.root

NODE_INDEX = "5"
# Pod names are node-wide netns names (cilia-<ns>-<pod>): unique to this file, beside other tests' nodes.
PODS = {"client": "obs-client", "web": "obs-web", "other": "obs-other"}
CLIENT, WEB, OTHER = PODS["client"], PODS["web"], PODS["other"]
DENY = cnp("deny-client-to-web", {
    "endpointSelector": {"matchLabels": {"app": "client"}},
    "egressDeny": [{"toEndpoints": [{"matchLabels": {"app": "web"}}]}],
})  # fmt: skip
AUDITED_DENY = {**DENY, "metadata": {"name": "audit-deny-client-to-web", "namespace": "default",
                                     "annotations": {"cilia.io/audit": "true"}}}  # fmt: skip
WEB_FROM_OTHER = cnp("web-from-other", {
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "other"}}],
                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
})  # fmt: skip


class ObservedNode(LiveNode):
    def __init__(self, base: Path) -> None:
        super().__init__(base)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]

    def up(self) -> None:
        self.cilia("up", "--node-index", NODE_INDEX, "--metrics-addr", f"127.0.0.1:{self.metrics_port}")

    def observe(self, *args: str, after: int = 0) -> list[dict[str, Any]]:
        """Flows as ``cilia observe -o json`` prints them, those numbered after ``after``."""
        out = self.cilia("observe", *args, "-o", "json").stdout
        return [f for f in map(json.loads, out.splitlines()) if f["seq"] > after]

    def last_seq(self) -> int:
        return max((f["seq"] for f in self.observe()), default=0)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedNode]:
    n = ObservedNode(tmp_path_factory.mktemp("observe-live"))
    try:
        n.up()
        n.apply(*(pod(name, {"app": app}) for app, name in PODS.items()))
        yield n
    finally:
        created_netns, created_links = n.created()
        down = n.cilia("down", "--purge", check=False)
        for pid in _processes(str(n.cfg.state_dir)) + _processes(str(n.cfg.lab_run_dir)):
            os.kill(pid, signal.SIGKILL)  # only processes of this test's node
        assert down.returncode == 0, down.stdout + down.stderr
        from cilia.lab import netns

        assert created_netns.isdisjoint(netns.names()), "network namespaces left behind"
        assert created_links.isdisjoint(_links()), "links left behind"
        assert not n.pin_root.exists(), f"pins left behind under {n.pin_root}"


def refs(flow: dict[str, Any], field: str) -> list[tuple[str, str, str, str]]:
    return [(r["kind"], r["namespace"], r["name"], r.get("rule", "")) for r in flow.get(field, [])]


def test_denied_curl_names_the_deny_rule_and_filters(node: ObservedNode) -> None:
    web, start = node.ips()[WEB], node.last_seq()
    path = node.apply(DENY)
    try:
        assert not node.curl_from_pod(CLIENT, web)
        flows = node.observe("--verdict", "DROPPED", "--from-pod", CLIENT, after=start)
        assert flows, "the drop was not observed"
        assert {(f["verdict"], f["drop_reason_desc"], f["traffic_direction"], f["IP"]["destination"],
                 f["l4"]["TCP"]["destination_port"], f["source"]["pod_name"], f["destination"]["pod_name"])
                for f in flows} == {
            ("DROPPED", "POLICY_DENY", "EGRESS", web, 80, CLIENT, WEB)}  # fmt: skip
        assert {tuple(refs(f, "egress_denied_by")) for f in flows} == {
            (("CiliumNetworkPolicy", "default", "deny-client-to-web", "egressDeny[0]"),)
        }
        # the filters, on the same live flows
        seqs = [f["seq"] for f in flows]
        assert [f["seq"] for f in node.observe("--to-pod", WEB, "--port", "80", "--protocol", "tcp",
                                               "--verdict", "DROPPED", after=start)] == seqs  # fmt: skip
        assert [
            f["seq"] for f in node.observe("--verdict", "DROPPED", "--from-pod", CLIENT, "--last", "1")
        ] == [max(seqs)]
        assert node.observe("--verdict", "DROPPED", "--from-pod", CLIENT, "--protocol", "udp") == []
        assert node.observe("--verdict", "DROPPED", "--from-pod", CLIENT, "--port", "81") == []
        assert node.observe("--verdict", "DROPPED", "--from-pod", WEB) == []
        assert node.observe("--verdict", "FORWARDED", "--from-pod", CLIENT, "--to-pod", WEB) == []
    finally:
        node.delete(path)


def test_default_deny_names_the_policy_and_allowed_connection_its_rule(node: ObservedNode) -> None:
    web, start = node.ips()[WEB], node.last_seq()
    path = node.apply(WEB_FROM_OTHER)
    try:
        assert not node.curl_from_pod(CLIENT, web)
        assert node.curl_from_pod(OTHER, web)
        dropped = node.observe("--verdict", "DROPPED", "--from-pod", CLIENT, "--to-pod", WEB, after=start)
        assert {(f["traffic_direction"], f["drop_reason_desc"]) for f in dropped} == {
            ("INGRESS", "POLICY_DENIED")
        }
        assert {
            (tuple(refs(f, "default_deny_by")), tuple(refs(f, "ingress_denied_by"))) for f in dropped
        } == {((("CiliumNetworkPolicy", "default", "web-from-other", ""),), ())}
        allowed = node.observe("--verdict", "FORWARDED", "--from-pod", OTHER, "--to-pod", WEB, "--last", "1")
        assert [(f["traffic_direction"], f["l4"]["TCP"]["destination_port"], refs(f, "ingress_allowed_by"))
                for f in allowed] == [
            ("INGRESS", 80, [("CiliumNetworkPolicy", "default", "web-from-other", "ingress[0]")])
        ]  # fmt: skip
    finally:
        node.delete(path)


def test_metrics_count_the_drops(node: ObservedNode) -> None:
    web, start = node.ips()[WEB], node.last_seq()
    path = node.apply(DENY)
    icmp_drops = ("hubble_drop_total", (("protocol", "ICMPv4"), ("reason", "POLICY_DENY")))
    try:
        before = node.metrics().get(icmp_drops, 0.0)
        ping = node.cilia(
            "exec", CLIENT, "--", "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", web, check=False
        )
        assert ping.returncode != 0
        deadline = time.monotonic() + 15  # the kernel counters are read every 5 s
        while True:
            m = node.metrics()
            dropped = node.observe("--verdict", "DROPPED")
            kernel = sum(v for (name, _), v in m.items() if name == "cilium_drop_count_total")
            seen = sum(v for (name, _), v in m.items() if name == "hubble_drop_total")
            if (m.get(icmp_drops, 0.0) - before, kernel, seen) == (3, len(dropped), len(dropped)):
                break
            assert time.monotonic() < deadline, (m.get(icmp_drops, 0.0) - before, kernel, seen, len(dropped))
            time.sleep(0.5)
        icmp = node.observe("--verdict", "DROPPED", "--protocol", "icmp", "--from-pod", CLIENT, after=start)
        assert len(icmp) == 3
    finally:
        node.delete(path)


def test_node_audit_mode_lets_the_drop_through_and_reports_it(node: ObservedNode) -> None:
    web, start = node.ips()[WEB], node.last_seq()
    path = node.apply(DENY)
    try:
        assert json.loads(node.cilia("audit", "on", "-o", "json").stdout) == {
            "node": True, "namespaces": [], "applied_by_agent": True}  # fmt: skip
        assert node.curl_from_pod(CLIENT, web)
        audited = node.observe(
            "--verdict", "AUDIT", "--from-pod", CLIENT, "--to-pod", WEB, "--port", "80", after=start
        )
        assert audited, "the audited flow was not observed"
        assert {(f["traffic_direction"], f["drop_reason_desc"], tuple(refs(f, "egress_denied_by")))
                for f in audited} == {
            ("EGRESS", "POLICY_DENY",
             (("CiliumNetworkPolicy", "default", "deny-client-to-web", "egressDeny[0]"),))
        }  # fmt: skip
        late = node.apply(pod("obs-late", {"app": "client"}))  # created while node audit is on
        try:
            assert node.curl_from_pod("obs-late", web)
        finally:
            node.delete(late)
        node.cilia("audit", "off")
        assert not node.curl_from_pod(CLIENT, web)
    finally:
        node.cilia("audit", "off")
        node.delete(path)


def test_audit_annotation_lets_its_drop_through_and_reports_it(node: ObservedNode) -> None:
    web, start = node.ips()[WEB], node.last_seq()
    path = node.apply(AUDITED_DENY)
    try:
        assert node.curl_from_pod(CLIENT, web)
        audited = node.observe("--verdict", "AUDIT", "--from-pod", CLIENT, "--to-pod", WEB, after=start)
        assert audited, "the audited flow was not observed"
        assert {(f["traffic_direction"], f["drop_reason_desc"], tuple(refs(f, "egress_denied_by")))
                for f in audited} == {
            ("EGRESS", "POLICY_DENY",
             (("CiliumNetworkPolicy", "default", "audit-deny-client-to-web", "egressDeny[0]"),))
        }  # fmt: skip
        described = node.cilia("describe", "pod", CLIENT).stdout
        assert "CiliumNetworkPolicy/default/audit-deny-client-to-web (audit mode)" in described
    finally:
        node.delete(path)


def test_flow_log_and_audit_mode_survive_an_agent_restart(node: ObservedNode) -> None:
    web = node.ips()[WEB]
    path = node.apply(DENY)
    try:
        node.cilia("audit", "on")
        before = [f["seq"] for f in node.observe()]
        assert before
        pid = int(json.loads(node.cilia("status", "-o", "json").stdout)["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "the agent did not stop"
            time.sleep(0.1)
        node.up()
        after = [f["seq"] for f in node.observe()]
        assert after[: len(before)] == before
        # the restarted agent re-attached the endpoints with node audit on, and keeps observing
        assert json.loads(node.cilia("audit", "status", "-o", "json").stdout)["node"] is True
        assert node.curl_from_pod(CLIENT, web)
        newest = node.observe("--verdict", "AUDIT", "--from-pod", CLIENT, "--last", "1")
        assert [f["seq"] > max(before) for f in newest] == [True]
    finally:
        node.cilia("audit", "off")
        node.delete(path)


def test_the_agent_registers_its_pods_for_host_routing(node: ObservedNode) -> None:
    """The local endpoint map (``cilia bpf lxc list``) holds each pod's addresses with its device,
    endpoint and the veth pair's MACs, and host routing uses it: with forwarding off on the client's
    host veth (the fib lookup and the stack both refuse) client -> web still connects, and web's host
    veth transmits none of it. A deleted pod's entries go with it."""
    from cilia.agent.endpoints import EndpointTable

    def local() -> dict[str, dict[str, Any]]:
        return {r["address"]: r for r in json.loads(node.cilia("bpf", "lxc", "list", "-o", "json").stdout)}

    eps = {e.pod.name: e for e in EndpointTable(node.cfg.endpoints_path)}
    rows = local()
    for name in PODS.values():
        ep = eps[name]
        link = subprocess.run(["ip", "-n", ep.netns, "-j", "link", "show", "eth0"], capture_output=True,
                              text=True, check=True).stdout
        want = {"ifindex": ep.ifindex, "ifname": ep.host_ifname, "endpoint_id": ep.id,
                "pod_mac": json.loads(link)[0]["address"],
                "host_mac": Path(f"/sys/class/net/{ep.host_ifname}/address").read_text().strip()}
        for ip in filter(None, (ep.ip, ep.ip6)):
            assert rows.pop(ip) == {"address": ip, **want}
    assert rows == {}
    client, web = eps[CLIENT], eps[WEB]
    forwarding = Path(f"/proc/sys/net/ipv4/conf/{client.host_ifname}/forwarding")
    tx = Path(f"/sys/class/net/{web.host_ifname}/statistics/tx_packets")
    saved, before = forwarding.read_text(), int(tx.read_text())
    try:
        forwarding.write_text("0\n")
        assert node.curl_from_pod(CLIENT, web.ip)
    finally:
        forwarding.write_text(saved)
    assert int(tx.read_text()) - before < 5

    path = node.apply(pod("obs-lxc", {"app": "lxc"}))
    extra = node.ips()["obs-lxc"]
    assert extra in local()
    node.delete(path)
    deadline = time.monotonic() + 10
    while extra in local():
        assert time.monotonic() < deadline, "the deleted pod's entry stayed"
        time.sleep(0.1)
