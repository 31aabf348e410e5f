"""The html page's golden form: the data it embeds (groups, matrix bitsets, traces, changes) as indented
JSON; the page around it (the vendored cytoscape.js, the script) is not golden material."""

from __future__ import annotations

import json
import re

DATA = re.compile(r'<script id="cilia-data" type="application/json">(.*?)</script>', re.S)


def page_data(page: str) -> dict:
    """The data object of a page of cilia.analyze.graphpage."""
    found = DATA.search(page)
    assert found is not None, "no cilia-data in the page"
    return json.loads(found.group(1))


def page_golden_text(page: str) -> str:
    return json.dumps(page_data(page), indent=1, sort_keys=True) + "\n"
