"""``apply`` refuses L7 parts cilia cannot enforce, naming file, line and field: terminatingTLS /
originatingTLS always, Kafka / l7proto / listener unless ``--allow-l4-only-l7`` (then stored with the
``cilia.io/l4-only-l7`` annotation and shown by get/describe); invalid RE2 regexes and serverNames
patterns as Cilium (Go regexp for path/method) and its proxy (host, SNI patterns) refuse them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cilia.agent import manifests
from cilia.agent.views import policies_table
from cilia.cli.commands.describe import describe_policy
from cilia.cli.main import app
from cilia.k8s.l7checks import L4_ONLY_ANNOTATION
from cilia.k8s.validate import validate_paths
from cilia.store import Kind, open_store

HEAD = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: {name}
  namespace: default
spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: client}}}}]
    toPorts:
    - ports: [{{port: "{port}", protocol: TCP}}]
"""
KAFKA = HEAD.format(name="kafka", port="9092") + "      rules:\n        kafka: [{topic: orders}]\n"
L7PROTO = HEAD.format(name="proto", port="90") + "      rules:\n        l7proto: r2\n        l7: [{c: R}]\n"
TLS = HEAD.format(name="tls", port="443") + "      terminatingTLS: {secret: {name: cert}}\n"
HTTP_OK = HEAD.format(name="web", port="80") + '      rules:\n        http: [{method: GET, path: "/p/.*"}]\n'
BAD_PATH = HEAD.format(name="badpath", port="80") + '      rules:\n        http: [{path: "/(a"}]\n'
BAD_HOST = HEAD.format(name="badhost", port="80") + '      rules:\n        http: [{host: "(?=x)"}]\n'
BAD_SNI = HEAD.format(name="badsni", port="443") + '      serverNames: ["a..example.com"]\n'
LISTENER = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: lst
  namespace: default
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: cec}, name: l1}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def test_kafka_l7proto_listener_refused_naming_file_line_field(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    files = [
        write(tmp_path, "k.yaml", KAFKA),
        write(tmp_path, "p.yaml", L7PROTO),
        write(tmp_path, "l.yaml", LISTENER),
    ]
    out = manifests.apply(store, files)
    assert not out.ok and out.revision == 0 and store.revision == 0
    got = [(Path(e.file).name, e.line, e.path) for e in out.report.errors]
    assert got == [
        ("k.yaml", 13, "spec.ingress[0].toPorts[0].rules.kafka"),
        ("p.yaml", 13, "spec.ingress[0].toPorts[0].rules.l7proto"),
        ("l.yaml", 12, "spec.egress[0].toPorts[0].listener"),
    ]
    assert all("--allow-l4-only-l7" in (e.hint or "") for e in out.report.errors)
    assert "Kafka" in out.report.errors[0].message and "L4 only" in out.report.errors[0].message


def test_allow_l4_only_l7_stores_the_annotation_and_get_describe_show_it(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    out = manifests.apply(store, [write(tmp_path, "k.yaml", KAFKA), write(tmp_path, "w.yaml", HTTP_OK)],
                          allow_l4_only_l7=True)
    assert out.ok, out.report.errors
    rec = store.get(Kind.CNP.key("default", "kafka"))
    assert rec is not None and rec.value["metadata"]["annotations"] == {L4_ONLY_ANNOTATION: "true"}
    web = store.get(Kind.CNP.key("default", "web"))
    assert web is not None and "annotations" not in web.value["metadata"]  # nothing to mark: HTTP is enforced
    table = policies_table(store.list(Kind.CNP))
    rows = {r[0]: r for r in table.rows}
    assert rows["kafka"][2] == "ingress (L7 rules at L4 only)" and rows["web"][2] == "ingress"
    assert f"enforced at L4 only ({L4_ONLY_ANNOTATION}" in (
        describe_policy(rec, None)
    )


def test_terminating_tls_is_refused_even_with_the_flag(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    out = manifests.apply(store, [write(tmp_path, "t.yaml", TLS)], allow_l4_only_l7=True)
    assert not out.ok
    (e,) = out.report.errors
    assert (e.line, e.path) == (12, "spec.ingress[0].toPorts[0].terminatingTLS")
    assert "terminatingTLS is not supported by cilia" in e.message


def test_regexes_and_server_names_refused(tmp_path: Path) -> None:
    # path/method: Cilium's own Sanitize (Go regexp) -- `cilia validate` says so too
    report = validate_paths([write(tmp_path, "bp.yaml", BAD_PATH)])
    (e,) = report.errors
    assert e.path == "spec.ingress[0].toPorts[0].rules.http[0].path"
    assert e.message.startswith("error parsing regexp: missing )")
    # host and server names: Envoy would refuse the policy; apply refuses it
    store = open_store(backend="memory")
    out = manifests.apply(store, [write(tmp_path, "bh.yaml", BAD_HOST), write(tmp_path, "bs.yaml", BAD_SNI)])
    assert [e.path for e in out.report.errors] == [
        "spec.ingress[0].toPorts[0].rules.http[0].host",
        "spec.ingress[0].toPorts[0].serverNames[0]",
    ]
    assert store.revision == 0


def test_cli_apply_flag(tmp_path: Path) -> None:
    f = write(tmp_path, "k.yaml", KAFKA)
    state = tmp_path / "state"
    runner = CliRunner()
    r = runner.invoke(app, ["apply", "-f", f, "--no-wait", "--state-dir", str(state)])
    assert r.exit_code == 1
    assert "rules.kafka" in r.output and "nothing was applied" in r.output
    r = runner.invoke(app, ["apply", "-f", f, "--no-wait", "--allow-l4-only-l7", "--state-dir", str(state)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["get", "cnp", "--state-dir", str(state)])
    assert "(L7 rules at L4 only)" in r.output


def test_validate_warns_what_apply_will_refuse(tmp_path: Path) -> None:
    report = validate_paths([write(tmp_path, "k.yaml", KAFKA), write(tmp_path, "t.yaml", TLS)])
    assert report.valid  # Cilium accepts them
    assert [w.split(": ", 2)[1] for w in report.warnings] == [
        "spec.ingress[0].toPorts[0].rules.kafka",
        "spec.ingress[0].toPorts[0].terminatingTLS",
    ]
    assert report.warnings[0].endswith("`cilia apply` needs --allow-l4-only-l7 for it")
    assert report.warnings[1].endswith("`cilia apply` refuses it")


HOST_DNS = """\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: host-dns
spec:
  nodeSelector: {}
  egress:
  - toEntities: [world]
    toPorts:
    - ports: [{port: "53", protocol: UDP}]
      rules:
        dns: [{matchPattern: "*.example.test"}]
"""


def test_a_host_policys_dns_rules_are_refused_unless_l4_only(tmp_path: Path) -> None:
    """The host firewall does not send the node's queries through the DNS proxy: never store a name
    check that is not made (a pod policy's DNS rules are enforced and stay accepted)."""
    store = open_store(backend="memory")
    f = write(tmp_path, "h.yaml", HOST_DNS)
    out = manifests.apply(store, [f])
    assert not out.ok and store.revision == 0
    [e] = out.report.errors
    assert (Path(e.file).name, e.line, e.path) == ("h.yaml", 12, "spec.egress[0].toPorts[0].rules.dns")
    assert "--allow-l4-only-l7" in (e.hint or "")
    pod_dns = HOST_DNS.replace("nodeSelector: {}", "endpointSelector: {}")
    assert manifests.apply(store, [write(tmp_path, "p.yaml", pod_dns)]).ok
    out = manifests.apply(store, [f], allow_l4_only_l7=True)
    assert out.ok, out.report.errors
    rec = store.get(Kind.CCNP.key("", "host-dns"))
    assert rec is not None and rec.value["metadata"]["annotations"] == {L4_ONLY_ANNOTATION: "true"}
