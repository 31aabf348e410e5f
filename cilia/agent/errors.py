"""The agent layer's exception root: callers catch :class:`AgentError` for any failure of the node
agent, its settings, its API or its client."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent layer raises."""
