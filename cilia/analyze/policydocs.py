"""Policy documents as lint and trace see them: the typed object, its rules and where they are written."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from cilia.k8s import api
from cilia.k8s.record import ValidationError
from cilia.k8s.source import Document, FieldPath, format_path

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KNP = "NetworkPolicy"
POLICY_KINDS = (CNP, CCNP, KNP)

# Section names per direction, allow first; the same code handles both directions.
SECTIONS: dict[str, tuple[str, str]] = {
    "ingress": ("ingress", "ingressDeny"),
    "egress": ("egress", "egressDeny"),
}
PEER_FIELDS: dict[str, str] = {"ingress": "fromEndpoints", "egress": "toEndpoints"}
REQUIRES_FIELDS: dict[str, str] = {"ingress": "fromRequires", "egress": "toRequires"}


@dataclass(frozen=True, eq=False)
class PolicyDoc:
    """A policy object that parsed into the API model, with its document for positions."""

    doc: Document
    obj: api.CiliumNetworkPolicy | api.NetworkPolicy

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def name(self) -> str:
        return self.obj.metadata.name or ""

    @property
    def namespace(self) -> str:
        """The namespace rules apply in ("" for CCNP; ``default`` when a namespaced kind omits it)."""
        if self.kind == CCNP:
            return ""
        return self.obj.metadata.namespace or "default"

    @property
    def describe(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    def rules(self) -> Iterator[tuple[FieldPath, api.Rule]]:
        """(path, rule) for ``spec`` and every element of ``specs`` of a Cilium policy."""
        if not isinstance(self.obj, api.CiliumNetworkPolicy):
            return
        if self.obj.spec is not None:
            yield ("spec",), self.obj.spec
        for i, rule in enumerate(self.obj.specs or ()):
            yield ("specs", i), rule

    def position(self, path: Sequence[str | int]) -> tuple[int, int]:
        return self.doc.position(path)

    def where(self, path: Sequence[str | int]) -> tuple[str, int, int, str]:
        """(file, line, column, formatted path) of a field."""
        line, col = self.position(path)
        return self.doc.file, line, col, format_path(path)


def parse_policies(documents: Iterable[Document]) -> list[PolicyDoc]:
    """The policy documents that parse into the API models (others are the validator's business)."""
    out = []
    for doc in documents:
        model: type[api.CiliumNetworkPolicy] | type[api.NetworkPolicy]
        if doc.kind in (CNP, CCNP):
            model = api.CiliumNetworkPolicy
        elif doc.kind == KNP:
            model = api.NetworkPolicy
        else:
            continue
        try:
            out.append(PolicyDoc(doc, model.model_validate(doc.data)))
        except ValidationError:
            continue
    return out


def selector_text(sel: api.LabelSelector | None) -> str:
    """``app=app-a, access=frontend`` (matchExpressions as ``key Op [values]``)."""
    if sel is None:
        return "{}"
    parts = [f"{k}={v or ''}" for k, v in (sel.match_labels or {}).items()]
    for req in sel.match_expressions or ():
        values = f" [{', '.join(req.values or ())}]" if req.values else ""
        parts.append(f"{req.key} {req.operator}{values}")
    return ", ".join(parts) or "{} (everything)"
