"""headerMatches ``secret`` references resolved from the Secrets in the manifests (offline trace):
the Secret's single value is the expected header value; without the Secret the inline value is used
(Cilium's fallback), and without either the header match never succeeds (fail closed)."""

from __future__ import annotations

from pathlib import Path

from cilia.k8s.secrets import SecretModel, secret_value
from tests.helpers_analyze import run_cli

BASE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec: {containers: [{name: c, image: curl}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 80}]}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-token, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - headerMatches: [{name: X-Token, secret: {name: token}{inline}}]
"""
SECRET = """\
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: default}
data: {value: czNjcmV0}
"""


def trace(tmp_path: Path, text: str, header: str) -> int:
    f = tmp_path / "m.yaml"
    f.write_text(text)
    code, _, err = run_cli(["trace", "-f", str(f), "--from", "deployment:default/client", "--to",
                            "deployment:default/web", "--port", "80/TCP", "--http-header", header])
    assert "error" not in err, err
    return code


def test_secret_value_is_the_expected_header_value(tmp_path: Path) -> None:
    text = BASE.replace("{inline}", "") + SECRET
    assert trace(tmp_path, text, "X-Token: s3cret") == 0
    assert trace(tmp_path, text, "X-Token: other") == 1


def test_without_the_secret_the_inline_value_or_nothing(tmp_path: Path) -> None:
    assert trace(tmp_path, BASE.replace("{inline}", ", value: inline"), "X-Token: inline") == 0
    assert trace(tmp_path, BASE.replace("{inline}", ""), "X-Token: s3cret") == 1  # fail closed


def test_secret_values() -> None:
    one = SecretModel.model_validate({"metadata": {"name": "a"}, "stringData": {"k": "v"}})
    two = SecretModel.model_validate({"metadata": {"name": "a"}, "data": {"a": "YQ==", "b": "Yg=="}})
    bad = SecretModel.model_validate({"metadata": {"name": "a"}, "data": {"a": "not base64!"}})
    assert (secret_value(one), secret_value(two), secret_value(bad)) == ("v", None, None)
