"""The datapath layer's exception root: callers catch :class:`DatapathError` for any failure of
building, loading, opening or syncing the datapath (each also keeps its builtin base, so code that
catches ``OSError`` or ``RuntimeError`` still does)."""

from __future__ import annotations


class DatapathError(Exception):
    """Root of every error the datapath layer raises."""
