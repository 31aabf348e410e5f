"""A bad ``securityContext`` is refused by ``validate`` (and so by ``apply``, which validates first)
with file, line and field — not only when the lab starts the pod."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result
from cilia.lab.errors import LabError
from cilia.lab.security import run_as


def pod(pod_ctx: dict[str, Any] | None, ctx: dict[str, Any] | None, kind: str = "Pod") -> str:
    container = {"name": "c", "image": "x", **({"securityContext": ctx} if ctx else {})}
    spec: dict[str, Any] = {"containers": [container]}
    if pod_ctx is not None:
        spec["securityContext"] = pod_ctx
    if kind == "Deployment":
        doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {"matchLabels": {"a": "b"}},
                        "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec}}}
    else:
        doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    return yaml.safe_dump(doc, sort_keys=False)


def errors(text: str) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in validate_result(load_text(text, "t.yaml")).errors]


@pytest.mark.parametrize("pod_ctx, ctx", [
    (None, None),
    ({"runAsUser": 1000, "runAsGroup": 1000},
     {"capabilities": {"add": ["NET_ADMIN", "CAP_NET_RAW"], "drop": ["ALL"]}}),
    (None, {"privileged": True}),
    (None, {"runAsUser": 0, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["all"]}}),
])
def test_valid_security_contexts_pass_and_the_lab_runs_them(pod_ctx: Any, ctx: Any) -> None:
    assert errors(pod(pod_ctx, ctx)) == []
    run_as(pod_ctx, ctx, "spec.containers[0].securityContext")  # what validate passes, the lab can run


@pytest.mark.parametrize("pod_ctx, ctx, path, words", [
    (None, {"capabilities": {"add": ["NET_ADMIN", "FLY"]}},
     "spec.containers[0].securityContext.capabilities.add[1]",
     'Unsupported value: "FLY": unknown capability'),
    (None, {"capabilities": {"drop": "ALL"}},
     "spec.containers[0].securityContext.capabilities.drop", "expected a list"),
    (None, {"capabilities": ["NET_ADMIN"]},
     "spec.containers[0].securityContext.capabilities", "add and drop"),
    ({"runAsUser": -1}, None, "spec.securityContext.runAsUser", "between 0 and 2147483647"),
    (None, {"runAsGroup": 2147483648}, "spec.containers[0].securityContext.runAsGroup", "between 0 and"),
    (None, {"runAsUser": "root"}, "spec.containers[0].securityContext.runAsUser", "expected an integer"),
    (None, {"privileged": "yes"}, "spec.containers[0].securityContext.privileged", "expected true or false"),
    (None, {"privileged": True, "allowPrivilegeEscalation": False},
     "spec.containers[0].securityContext.allowPrivilegeEscalation", "`privileged` to true"),
    (None, {"allowPrivilegeEscalation": False, "capabilities": {"add": ["CAP_SYS_ADMIN"]}},
     "spec.containers[0].securityContext.allowPrivilegeEscalation", "CAP_SYS_ADMIN"),
    ("root", None, "spec.securityContext", "expected an object"),
])
def test_bad_security_contexts_are_refused_with_the_field(
    pod_ctx: Any, ctx: Any, path: str, words: str
) -> None:
    found = errors(pod(pod_ctx, ctx))
    assert [p for p, _ in found] == [path], found
    assert words in found[0][1]


def test_deployment_template_and_line_numbers() -> None:
    text = pod(None, {"capabilities": {"add": ["FLY"]}}, kind="Deployment")
    [err] = validate_result(load_text(text, "d.yaml")).errors
    assert err.path == "spec.template.spec.containers[0].securityContext.capabilities.add[0]"
    assert err.file == "d.yaml" and text.splitlines()[err.line - 1].strip() == "- FLY"


def test_the_lab_refuses_what_validate_refuses() -> None:
    with pytest.raises(LabError, match="unknown capability"):
        run_as(None, {"capabilities": {"add": ["FLY"]}}, "c")
