"""Errors raised by the node lab."""

from __future__ import annotations


class LabError(Exception):
    """A lab operation failed; the message names the pod and the step."""


class PodExistsError(LabError):
    pass


class PodNotFoundError(LabError):
    pass


class IpamExhaustedError(LabError):
    pass
