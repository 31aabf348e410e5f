"""The identity layer's exception root: callers catch :class:`IdentityError` for any failure of
labels, selectors, CIDR labels or the allocators."""

from __future__ import annotations


class IdentityError(Exception):
    """Root of every error the identity layer raises."""
