"""CiliumCIDRGroup: a named, labelled list of external prefixes that CIDR rules select by
``cidrGroupRef`` (the name) or ``cidrGroupSelector`` (the labels).

Cilium 1.18 serves the kind as ``cilium.io/v2`` and, deprecated, ``cilium.io/v2alpha1``; both have
the same schema (``pkg/k8s/apis/cilium.io/client/crds/v2/ciliumcidrgroups.yaml``): a cluster-scoped
object whose ``spec.externalCIDRs`` (required, may be empty) holds strings of ``format: cidr``.
Unknown fields are refused as ``kubectl apply`` with strict field validation refuses them.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from cilia.k8s import api
from cilia.k8s.errors import Error
from cilia.k8s.frozen import frozen
from cilia.k8s.netaddr import parse_prefix
from cilia.k8s.record import Field, Record
from cilia.k8s.source import Document, FieldPath, format_path
from cilia.k8s.structure import check_model

KIND = "CiliumCIDRGroup"
API_VERSIONS = ("cilium.io/v2", "cilium.io/v2alpha1")
DEPRECATED_VERSION = "cilium.io/v2alpha1"
# Labels with this prefix are Cilium's own; the agent drops them from a group's labels.
CILIUM_LABEL_PREFIX = "io.cilium.k8s"


class CIDRGroupSpecModel(Record, extra="forbid"):
    external_cidrs: list[str] = Field(alias="externalCIDRs")


class CIDRGroupModel(Record, extra="forbid"):
    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: api.ObjectMeta
    spec: CIDRGroupSpecModel
    status: dict[str, Any] | None = None


@frozen
class CIDRGroup:
    """A CiliumCIDRGroup: its name, its own labels and its prefixes (masked, as the ipcache keys
    them). ``source`` is where it was read from (a :class:`cilia.k8s.objects.Source`)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    cidrs: tuple[str, ...]
    source: Any = field(default=None, compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def selector_labels(self) -> dict[str, str]:
        """The labels ``cidrGroupSelector`` matches: the group's own, without Cilium's."""
        return {k: v for k, v in self.labels if not k.startswith(CILIUM_LABEL_PREFIX)}


def group_from(model: CIDRGroupModel, source: Any = None) -> CIDRGroup:
    """The value of a validated CiliumCIDRGroup; prefixes that do not parse are skipped (the agent
    does so too, with a warning; validation refuses them before)."""
    cidrs = []
    for text in model.spec.external_cidrs:
        net = parse_prefix(text)
        if net is not None and str(net) not in cidrs:
            cidrs.append(str(net))
    return CIDRGroup(
        name=model.metadata.name or "",
        labels=tuple(sorted((model.metadata.labels or {}).items())),
        cidrs=tuple(cidrs),
        source=source,
    )


def parse_group(obj: dict[str, Any]) -> CIDRGroup:
    """A stored CiliumCIDRGroup object (validated when it was applied) as a value."""
    return group_from(CIDRGroupModel.model_validate(obj))


def group_findings(model: CIDRGroupModel) -> list[tuple[FieldPath, str]]:
    """What the API server refuses in the spec beyond its structure: every ``externalCIDRs`` item's
    ``format: cidr`` (prefix form, as ``net.ParseCIDR``). ``metadata`` is checked as for every kind
    (:func:`cilia.k8s.validate.validate_document`)."""
    out: list[tuple[FieldPath, str]] = []
    for i, text in enumerate(model.spec.external_cidrs):
        if parse_prefix(text) is None:
            where = format_path(("spec", "externalCIDRs", i))
            hint = " (write it as a prefix, e.g. /32)" if "/" not in text else ""
            out.append(
                (("spec", "externalCIDRs", i), f'Invalid value: "{text}": {where} in body must be of type '
                 f'cidr: "{text}"{hint}')
            )
    return out


def document_errors(doc: Document) -> tuple[list[Error], list[str]]:
    """The errors and warnings of one CiliumCIDRGroup document (file, line and field of each)."""

    def error(path: FieldPath, message: str, hint: str | None = None) -> Error:
        line, col = doc.position(path)
        return Error(message, file=doc.file, line=line, column=col, path=format_path(path), hint=hint)

    version = doc.api_version
    if version not in API_VERSIONS:
        return [
            error(
                ("apiVersion",),
                f'no matches for kind "{KIND}" in version "{version}"',
                f"use apiVersion: {API_VERSIONS[0]}",
            )
        ], []
    model, problems, _ = check_model(CIDRGroupModel, doc.data)
    errors = [error(p.path, p.message) for p in problems]
    if model is not None:
        errors += [error(p, m) for p, m in group_findings(model)]
    warnings = []
    if version == DEPRECATED_VERSION:
        warnings.append(
            f"{doc.file}:{doc.line}: {DEPRECATED_VERSION} {KIND} is deprecated; use {API_VERSIONS[0]} {KIND}"
        )
    return errors, warnings
