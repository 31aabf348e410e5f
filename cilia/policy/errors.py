"""The policy layer's exception root: callers catch :class:`PolicyError` for any failure of
translation or resolution."""

from __future__ import annotations


class PolicyError(Exception):
    """Root of every error the policy layer raises."""
