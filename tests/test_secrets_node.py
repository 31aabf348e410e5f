"""Secrets on a running node: ``apply`` stores them (kind ``secrets``, in the 0600 store file), the
agent feeds their values to the policy engine, so a ``headerMatches`` ``secret`` reference compares
with the stored value (and again without it once the Secret is gone: fail closed); ``cilia get
secrets`` shows names and keys, never a value."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.endpoints import EndpointTable
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.k8s.secrets import redacted
from cilia.lab.ipam import Ipam
from cilia.store import Kind, Store, key_for_object, open_store
from tests.helpers_analyze import run_cli

VALUE = "s3cret-v4lue"
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": "default"},
          "type": "Opaque", "stringData": {"value": VALUE}}  # fmt: skip


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
            "labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}  # fmt: skip


POLICY = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
          "metadata": {"name": "web-token", "namespace": "default"},
          "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [
              {"fromEndpoints": [{"matchLabels": {"app": "client"}}],
               "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [
                   {"headerMatches": [{"name": "X-Token", "secret": {"name": "token"}}]}]}}]}]}}  # fmt: skip


class Node:
    def __init__(self, tmp: Path) -> None:
        self.store: Store = open_store(backend="memory")
        ipam = Ipam(self.store, 0)
        runtime = AddressOnlyRuntime(tmp / "p.json", ipam.allocate, ipam.release_owner, ipam.gateway)
        eps = EndpointTable(tmp / "eps.json")
        self.rec = Reconciler(self.store, runtime, SimNodeDatapath(), endpoints=eps)
        self.watch = self.store.watch(self.rec.start() + 1)

    def settle(self) -> None:
        for _ in range(5):
            evs = self.watch.drain()
            if not evs:
                return
            self.rec.handle(evs)

    def put(self, *objs: dict[str, Any]) -> None:
        for obj in objs:
            self.store.put(key_for_object(obj, "default"), obj)
        self.settle()

    def token_allowed(self, token: str) -> bool:
        """The web pod's L7 policy on port 80 decides a GET from the client with this X-Token."""
        eps = {e.pod.name: e for e in self.rec.endpoints}
        web = eps["web"]
        l7 = self.rec.policy.endpoint_policy(web.identity, self.rec.desired.pods[web.pod]).l7
        port = next(p for p in l7 if p.port == 80)
        return port.decide_http(eps["client"].identity, "GET", "/", "web", {"X-Token": token}).allowed


def test_the_node_resolves_secret_references_from_stored_secrets(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.put(_pod("client"), _pod("web"), POLICY)
    assert not node.token_allowed(VALUE)  # no Secret: no value, the header match fails closed
    node.put(SECRET)
    assert node.token_allowed(VALUE) and not node.token_allowed("other")
    changed = {**SECRET, "stringData": {"value": "rotated"}}
    node.put(changed)
    assert node.token_allowed("rotated") and not node.token_allowed(VALUE)
    node.store.delete(key_for_object(SECRET, "default"))
    node.settle()
    assert not node.token_allowed("rotated")
    # a restarted agent reads the Secret from the store before it computes the policies
    node.put(SECRET)
    again = Reconciler(node.store, node.rec.runtime, node.rec.datapath, endpoints=node.rec.endpoints)
    again.start()
    node.rec = again
    assert node.token_allowed(VALUE)
    assert VALUE not in repr(node.rec.desired)


def test_apply_stores_secrets_and_get_never_prints_values(tmp_path: Path) -> None:
    state = tmp_path / "state"
    f = tmp_path / "s.yaml"
    f.write_text(json.dumps(SECRET))
    code, out, err = run_cli(["apply", "-f", str(f), "--state-dir", str(state)])
    assert code == 0, err
    assert "secret/token created" in out and VALUE not in out + err
    files = [p for p in state.rglob("*") if p.is_file() and VALUE.encode() in p.read_bytes()]
    assert files, "the Secret is stored"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    for fmt in ("table", "wide", "json", "yaml"):
        code, out, err = run_cli(["get", "secrets", "--state-dir", str(state), "-o", fmt])
        assert code == 0, err
        assert "token" in out and "value" in out and VALUE not in out + err, (fmt, out)
    code, out, _ = run_cli(["get", "secret", "token", "--state-dir", str(state)])
    assert out.split() == ["NAME", "TYPE", "DATA", "KEYS", "token", "Opaque", "1", "value"]
    code, out, err = run_cli(["describe", "secret", "token", "--state-dir", str(state)])
    assert code != 0 and VALUE not in out + err


def test_redacted_keeps_keys_and_sizes_only() -> None:
    obj = {**SECRET, "data": {"b": "YWJj"}}
    got = redacted(obj)
    assert got["data"] == {"b": "<redacted: 3 bytes>", "value": f"<redacted: {len(VALUE)} bytes>"}
    assert "stringData" not in got and got["metadata"] == SECRET["metadata"]
    assert Kind.SECRETS.namespaced
