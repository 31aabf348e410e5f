"""Kubernetes name/label syntax and Cilium's fixed vocabularies (entities, protocols, ICMP names).

Facts from Kubernetes ``apimachinery/pkg/util/validation`` and Cilium 1.18
(``pkg/policy/api/{entity,icmp,utils}.go``, ``pkg/iana/svcname.go`` and the CNP CRD schema).
"""

from __future__ import annotations

import re

LABEL_VALUE_MAX = 63
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$")
_K8S_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
_HAS_LETTER = re.compile(r"[a-z]")

# The CRD pattern for PortProtocol.port. Its alternation is not grouped, so the first branch is only
# anchored at the start and the second only at the end; the API server applies it exactly so.
CRD_PORT_PATTERN = re.compile(
    r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
    r"|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$"
)
FQDN_NAME_PATTERN = re.compile(r"^([-a-zA-Z0-9_]+[.]?)+$")
FQDN_WILDCARD_PATTERN = re.compile(r"^([-a-zA-Z0-9_*]+[.]?)+$")
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


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def is_iana_svc_name(value: str) -> bool:
    """Cilium's ``iana.IsSvcName`` (named ports in CNP; case-insensitive)."""
    return 0 < len(value) <= 15 and bool(_IANA_SVC_NAME.match(value))


def k8s_port_name_errors(value: str) -> list[str]:
    """Kubernetes ``IsValidPortName`` (named ports in NetworkPolicy)."""
    errs = []
    if not 0 < len(value) <= 15:
        errs.append("must be no more than 15 characters")
    if not _K8S_PORT_NAME_CHARS.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and not _HAS_LETTER.search(value):
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
