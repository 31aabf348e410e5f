"""PyYAML's binding of libyaml — the parser cilia reads manifests with — imported without its
slowest part.

Importing PyYAML's C parser imports the whole ``yaml`` package, and its pure-Python reader compiles,
at import, a pattern of every printable code point: ~10 ms here, 40 % of Python's own start-up and a
tenth of ``cilia trace`` (issue 15 item 2), for a reader cilia never uses (libyaml checks the
characters itself). The same set of characters written as its complement compiles in under 1 ms;
placed in :mod:`re`'s cache under PyYAML's pattern before ``yaml`` is first imported, it is what the
reader gets. The reader then finds exactly the characters it found before (tests/test_libyaml.py
checks every code point); where ``re`` keeps no such cache, or ``yaml`` is already imported, nothing
is changed.
"""

from __future__ import annotations

import re
import sys

# yaml/reader.py, Reader.NON_PRINTABLE: every character YAML 1.1 does not allow in a stream
PYYAML_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
# the same set: the code points that pattern's class leaves out
NON_PRINTABLE = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"


def _seed_reader_pattern() -> None:
    cache = getattr(re, "_cache", None)
    if "yaml" not in sys.modules and isinstance(cache, dict):
        cache.setdefault((str, PYYAML_NON_PRINTABLE, 0), re.compile(NON_PRINTABLE))


_seed_reader_pattern()

from yaml._yaml import CParser  # noqa: E402 - after the cache is seeded
from yaml.error import MarkedYAMLError, YAMLError  # noqa: E402
from yaml.events import (  # noqa: E402
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

__all__ = [
    "AliasEvent",
    "CParser",
    "DocumentEndEvent",
    "DocumentStartEvent",
    "MappingStartEvent",
    "MarkedYAMLError",
    "ScalarEvent",
    "SequenceStartEvent",
    "StreamEndEvent",
    "YAMLError",
]
