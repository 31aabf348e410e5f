"""Which proxy parses a redirected connection, and the port each listens on by default.

Apart from :mod:`cilia.policy.l7` (which re-exports both) so that resolving a policy without L7
rules does not build the L7 model's classes: every endpoint's resolution reads the proxy ports,
few policies have L7 rules (start-up of ``cilia trace``, issue 15).
"""

from __future__ import annotations

from enum import StrEnum

from cilia.policy.types import Direction


class L7Parser(StrEnum):
    """Which proxy parses a redirected connection."""

    HTTP = "http"
    TLS = "tls"  # serverNames only: the ClientHello's SNI, TLS is not terminated
    DNS = "dns"


DEFAULT_PROXY_PORTS: dict[tuple[L7Parser, Direction], int] = {
    (L7Parser.HTTP, Direction.INGRESS): 15001,
    (L7Parser.HTTP, Direction.EGRESS): 15002,
    (L7Parser.TLS, Direction.INGRESS): 15003,
    (L7Parser.TLS, Direction.EGRESS): 15004,
    (L7Parser.DNS, Direction.EGRESS): 15053,
}
