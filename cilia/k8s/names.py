"""Kubernetes name/label syntax and Cilium's fixed vocabularies (entities, protocols, ICMP names).

Facts from Kubernetes ``apimachinery/pkg/util/validation`` and Cilium 1.18
(``pkg/policy/api/{entity,icmp,utils}.go``, ``pkg/iana/svcname.go`` and the CNP CRD schema).
"""

from __future__ import annotations

import re

LABEL_VALUE_MAX = 63
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
# Every pattern is anchored with \A…\Z: Python's `$` also matches before a trailing newline, Go's does not.
_NAME_PART = re.compile(r"\A([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"\A(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS1123_LABEL = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# Patterns most inputs never need: compiled at first use (re's cache), not at import.
_DNS1035_LABEL = r"\A[a-z]([-a-z0-9]*[a-z0-9])?\Z"
_IANA_SVC_NAME = r"\A([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*\Z"
_K8S_PORT_NAME_CHARS = r"\A[-a-z0-9]+\Z"
_HAS_LETTER = r"[a-z]"

# The CRD pattern for PortProtocol.port. Its alternation is not grouped, so the first branch is only
# anchored at the start and the second only at the end; the API server applies it exactly so.
CRD_PORT_PATTERN = re.compile(
    r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
    r"|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*\Z"
)
FQDN_NAME_PATTERN = re.compile(r"\A([-a-zA-Z0-9_]+[.]?)+\Z")
FQDN_WILDCARD_PATTERN = re.compile(r"\A([-a-zA-Z0-9_*]+[.]?)+\Z")
FQDN_MAX = 255

ENTITIES = (
    "all",
    "world",
    "cluster",
    "host",
    "init",
    "ingress",
    "unmanaged",
    "remote-node",
    "health",
    "none",
    "kube-apiserver",
)
# Known to Cilium's entity mapping but missing from the 1.18 CRD enum (semantics.md §3.2).
ENTITIES_GO_ONLY = ("world-ipv4", "world-ipv6")
CILIUM_PROTOCOLS = ("TCP", "UDP", "SCTP", "ANY")
K8S_PROTOCOLS = ("SCTP", "TCP", "UDP")
ICMP_FAMILIES = ("IPv4", "IPv6")
AUTH_MODES = ("disabled", "required", "test-always-fail")
KAFKA_ROLES = ("produce", "consume")
HEADER_MISMATCH_ACTIONS = ("LOG", "ADD", "DELETE", "REPLACE")
ENVOY_CONFIG_KINDS = ("CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POLICY_TYPES = ("Ingress", "Egress")

ICMP_V4_TYPES = {
    "EchoReply": 0,
    "DestinationUnreachable": 3,
    "Redirect": 5,
    "Echo": 8,
    "EchoRequest": 8,
    "RouterAdvertisement": 9,
    "RouterSelection": 10,
    "TimeExceeded": 11,
    "ParameterProblem": 12,
    "Timestamp": 13,
    "TimestampReply": 14,
    "Photuris": 40,
    "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
ICMP_V6_TYPES = {
    "DestinationUnreachable": 1,
    "PacketTooBig": 2,
    "TimeExceeded": 3,
    "ParameterProblem": 4,
    "EchoRequest": 128,
    "EchoReply": 129,
    "MulticastListenerQuery": 130,
    "MulticastListenerReport": 131,
    "MulticastListenerDone": 132,
    "RouterSolicitation": 133,
    "RouterAdvertisement": 134,
    "NeighborSolicitation": 135,
    "NeighborAdvertisement": 136,
    "RedirectMessage": 137,
    "RouterRenumbering": 138,
    "ICMPNodeInformationQuery": 139,
    "ICMPNodeInformationResponse": 140,
    "InverseNeighborDiscoverySolicitation": 141,
    "InverseNeighborDiscoveryAdvertisement": 142,
    "HomeAgentAddressDiscoveryRequest": 144,
    "HomeAgentAddressDiscoveryReply": 145,
    "MobilePrefixSolicitation": 146,
    "MobilePrefixAdvertisement": 147,
    "DuplicateAddressRequestCodeSuffix": 157,
    "DuplicateAddressConfirmationCodeSuffix": 158,
    "ExtendedEchoRequest": 160,
    "ExtendedEchoReply": 161,
}
# Names the CRD pattern admits: both tables, except that the 1.18 pattern misspells
# "ExtendedEcho Reply", so "ExtendedEchoReply" is refused by the API server for either family.
ICMP_CRD_NAMES = (frozenset(ICMP_V4_TYPES) | frozenset(ICMP_V6_TYPES)) - {"ExtendedEchoReply"}


def pattern_text(regex: re.Pattern[str]) -> str:
    """A pattern as the CRD schema writes it (``^…$``; Go's ``$`` is our ``\\Z``)."""
    text = regex.pattern
    if text.startswith("\\A"):
        text = "^" + text[2:]
    return text[:-2] + "$" if text.endswith("\\Z") else text


def qualified_name_errors(key: str) -> list[str]:
    """Kubernetes ``IsQualifiedName``: ``[prefix/]name`` (label keys)."""
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        if len(prefix) > 253:
            return ["prefix part must be no more than 253 characters"]
        if not _DNS1123_SUBDOMAIN.match(prefix):
            return [
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character"
            ]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character, with an optional DNS subdomain prefix and '/'"
        ]
    if not name:
        return ["name part must be non-empty"]
    if len(name) > 63:
        return ["name part must be no more than 63 characters"]
    if not _NAME_PART.match(name):
        return [
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character"
        ]
    return []


def label_value_errors(value: str) -> list[str]:
    """Kubernetes ``IsValidLabelValue``."""
    if len(value) > LABEL_VALUE_MAX:
        return [f"must be no more than {LABEL_VALUE_MAX} characters"]
    if not _LABEL_VALUE.match(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        ]
    return []


_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character"
)


def dns1123_label_errors(value: str) -> list[str]:
    """Kubernetes ``IsDNS1123Label`` (namespace names, container names)."""
    errs = [f"must be no more than {DNS1123_LABEL_MAX} characters"] if len(value) > DNS1123_LABEL_MAX else []
    return errs + ([] if _DNS1123_LABEL.match(value) else [_LABEL_MSG])


def dns1123_subdomain_errors(value: str) -> list[str]:
    """Kubernetes ``IsDNS1123Subdomain`` (most object names)."""
    errs = (
        [f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters"]
        if len(value) > DNS1123_SUBDOMAIN_MAX
        else []
    )
    return errs + ([] if _DNS1123_SUBDOMAIN.match(value) else [_SUBDOMAIN_MSG])


def dns1035_label_errors(value: str) -> list[str]:
    """Kubernetes ``IsDNS1035Label`` (Service names)."""
    errs = [f"must be no more than {DNS1123_LABEL_MAX} characters"] if len(value) > DNS1123_LABEL_MAX else []
    return errs + ([] if re.match(_DNS1035_LABEL, value) else [_DNS1035_MSG])


# How the API server validates metadata.name, by kind (``ValidateXName`` of each kind's validation).
_NAME_RULES = {
    "Namespace": dns1123_label_errors,
    "Service": dns1035_label_errors,
}


def object_name_errors(kind: str, name: str, *, generate: bool = False) -> list[str]:
    """The problems of ``name`` as ``metadata.name`` of a ``kind`` (a DNS-1123 subdomain unless the
    kind says otherwise). ``generate``: ``name`` is a ``generateName`` prefix, whose trailing '-' is
    allowed (Kubernetes masks it before checking)."""
    if generate and name.endswith("-"):
        name = name[:-1] + "a"
    return _NAME_RULES.get(kind, dns1123_subdomain_errors)(name)


def namespace_errors(namespace: str) -> list[str]:
    """The problems of a namespace name (``metadata.namespace``, ``-n``): a DNS-1123 label."""
    return dns1123_label_errors(namespace)


def labels_errors(labels: object) -> list[tuple[str, str]]:
    """Kubernetes ``ValidateLabels``: ``(key, message)`` for each bad key or value."""
    if not isinstance(labels, dict):
        return [("", "must be a map of string keys to string values")]
    out: list[tuple[str, str]] = []
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            out.append((str(key), "label keys and values must be strings"))
            continue
        out.extend((key, f'Invalid value: "{key}": {m}') for m in qualified_name_errors(key))
        out.extend((key, f'Invalid value: "{value}": {m}') for m in label_value_errors(value))
    return out


ANNOTATIONS_MAX_BYTES = 256 * 1024


def annotations_errors(annotations: object) -> list[tuple[str, str]]:
    """Kubernetes ``ValidateAnnotations``: keys are qualified names (lower-cased), total size 256 KiB."""
    if not isinstance(annotations, dict):
        return [("", "must be a map of string keys to string values")]
    out: list[tuple[str, str]] = []
    size = 0
    for key, value in annotations.items():
        if not isinstance(key, str) or not isinstance(value, str):
            out.append((str(key), "annotation keys and values must be strings"))
            continue
        size += len(key) + len(value)
        out.extend((key, f'Invalid value: "{key}": {m}') for m in qualified_name_errors(key.lower()))
    if size > ANNOTATIONS_MAX_BYTES:
        out.append(("", f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"))
    return out


def dns_name_errors(name: str) -> list[str]:
    """The problems of a DNS name given for a record (``cilia dns add``): the characters of Cilium's
    ``matchName`` pattern, labels of 1-63 characters, at most 253 without the final dot."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare or not FQDN_NAME_PATTERN.match(name):
        return ["a DNS name consists of letters, digits, '-' and '_' in dot-separated labels"]
    if len(bare) > 253:
        return ["must be no more than 253 characters"]
    if any(not 0 < len(label) <= 63 for label in bare.split(".")):
        return ["each dot-separated label must be 1 to 63 characters"]
    return []


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def is_iana_svc_name(value: str) -> bool:
    """Cilium's ``iana.IsSvcName`` (named ports in CNP; case-insensitive)."""
    return 0 < len(value) <= 15 and bool(re.match(_IANA_SVC_NAME, value))


def k8s_port_name_errors(value: str) -> list[str]:
    """Kubernetes ``IsValidPortName`` (named ports in NetworkPolicy)."""
    errs = []
    if not 0 < len(value) <= 15:
        errs.append("must be no more than 15 characters")
    if not re.match(_K8S_PORT_NAME_CHARS, value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and not re.search(_HAS_LETTER, value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def parse_go_uint16(text: str) -> int | None:
    """Go's ``strconv.ParseUint(s, 0, 16)``: base prefixes 0x/0o/0b/0, underscores; None if invalid."""
    s = text
    base = 10
    if len(s) > 1 and s[0] == "0":
        if s[1] in "xX":
            base, s = 16, s[2:]
        elif s[1] in "oO":
            base, s = 8, s[2:]
        elif s[1] in "bB":
            base, s = 2, s[2:]
        else:
            base, s = 8, s[1:]
        # with a base prefix, underscores may separate digits (and follow the prefix)
        if "_" in s:
            if s.endswith("_") or "__" in s:
                return None
            s = s.replace("_", "")
    if not s or not all(c in "0123456789abcdefABCDEF"[: base if base <= 10 else 22] for c in s):
        return None
    try:
        value = int(s, base)
    except ValueError:
        return None
    return value if value <= 0xFFFF else None
