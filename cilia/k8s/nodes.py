"""Checks of Node objects beyond their structure: ``status.addresses`` as the API server reads them.

A Node's labels are what host policies (``nodeSelector``) and ``fromNodes``/``toNodes`` select; its
InternalIP/ExternalIP addresses are the node's addresses in the ipcache (a flow to one of them goes
to the node, not to ``world``).
"""

from __future__ import annotations

from typing import Any

from cilia.k8s.labelsel import Finding
from cilia.k8s.netaddr import parse_addr

# core/v1 NodeAddressType
ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")
IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
_IP_EXAMPLE = "(e.g. 10.9.8.7 or 2001:db8::ffff)"


def node_address_findings(data: dict[str, Any]) -> list[Finding]:
    """(path, message) for each ``status.addresses`` entry of an unknown type, or of an IP type whose
    address is not an IP."""
    status = data.get("status")
    addresses = status.get("addresses") if isinstance(status, dict) else None
    out: list[Finding] = []
    for i, entry in enumerate(addresses if isinstance(addresses, list) else ()):
        if not isinstance(entry, dict):
            continue
        kind, address = entry.get("type"), entry.get("address")
        at = ("status", "addresses", i)
        if isinstance(kind, str) and kind not in ADDRESS_TYPES:
            supported = ", ".join(f'"{t}"' for t in ADDRESS_TYPES)
            out.append(((*at, "type"), f'Unsupported value: "{kind}": supported values: {supported}'))
        elif kind in IP_ADDRESS_TYPES and isinstance(address, str) and parse_addr(address) is None:
            message = f'Invalid value: "{address}": must be a valid IP address, ' + _IP_EXAMPLE
            out.append(((*at, "address"), message))
    return out
