"""The proxy layer's exception root: callers catch :class:`ProxyError` for any failure of the DNS
or HTTP proxy, their inputs or the transparent redirects."""

from __future__ import annotations


class ProxyError(Exception):
    """Root of every error the proxy layer raises."""
