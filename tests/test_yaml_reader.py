"""The libyaml reader (cilia.k8s.yamlread) against the ruamel.yaml round-trip loading it replaced.

The oracle below is the loader's former ``_parse``: ruamel's round-trip loader, ``to_plain`` and the
``lc`` positions. For every YAML/JSON file of the project (and the shared corpus when present) and for
generated documents, both must give the same documents, plain data, positions of every node, warnings,
skips and error positions. Known, deliberate differences (docs/differences.md) are normalised:
scalars with an explicit tag read as their value (ruamel returned an opaque ``TaggedScalar``), and
libyaml words some syntax errors differently (the position is the same).
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cilia.k8s import loader, source
from cilia.k8s.errors import Error
from cilia.k8s.source import TooManyNodes

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"

# ---------------------------------------------------------------- the oracle: loading as it was


def _to_plain(node: Any, budget: list[int]) -> Any:
    from ruamel.yaml.comments import TaggedScalar

    budget[0] -= 1
    if budget[0] < 0:
        raise TooManyNodes(f"document expands to more than {source.MAX_NODES} nodes (YAML aliases?)")
    if isinstance(node, Mapping):
        return {_to_plain(k, budget): _to_plain(v, budget) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_to_plain(v, budget) for v in node]
    if isinstance(node, TaggedScalar):  # the reader's documented difference: the value
        return str(node.value)
    for t in (bool, int, float, str):
        if isinstance(node, t):
            return t(node)
    if isinstance(node, datetime.datetime | datetime.date):
        return node.isoformat()
    return node


def _ruamel_positions(node: Any) -> Any:
    """The ruamel tree's positions in the reader's shape (mapping keys and list items, 1-based)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for key in node:
            try:
                kl, kc = node.lc.key(key)
            except KeyError:
                continue  # a key merged in with <<: no position of its own
            out[_to_plain(key, [source.MAX_NODES])] = (kl + 1, kc + 1, _ruamel_positions(node[key]))
        return out
    if isinstance(node, CommentedSeq):
        return [
            (node.lc.item(i)[0] + 1, node.lc.item(i)[1] + 1, _ruamel_positions(v)) for i, v in enumerate(node)
        ]
    return None


def _reader_positions(pos: Any) -> Any:
    if isinstance(pos, dict):
        return {k: (v[0], v[1], _reader_positions(v[2])) for k, v in pos.items()}
    if isinstance(pos, list):
        return [(v[0], v[1], _reader_positions(v[2])) for v in pos]
    return None


def _oracle(text: str) -> dict[str, Any]:
    """What the ruamel-based loader gave for ``text``: documents (index, item, data, line, column,
    positions), errors (line, column, message), warnings and skips."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    docs: list[tuple[Any, ...]] = []
    errors: list[tuple[int, int, str]] = []
    notes: list[str] = []
    skipped: list[tuple[int, str]] = []
    deep = loader._too_deep(text)
    if deep is not None:
        return {"docs": [], "errors": [("deep",)], "warnings": [], "skipped": []}
    index = -1

    def pos(node: Any, default: tuple[int, int]) -> tuple[int, int]:
        lc = getattr(node, "lc", None)
        return (lc.line + 1, lc.col + 1) if lc is not None and lc.line is not None else default

    try:
        for index, node in enumerate(loader.new_yaml().load_all(text)):
            line, col = pos(node, (1, 1))
            if node is None:
                notes.append(f"document {index + 1} is empty")
                continue
            if not isinstance(node, CommentedMap):
                plain = _to_plain(node, [source.MAX_NODES])
                what = "list" if isinstance(node, CommentedSeq) else type(plain).__name__
                skipped.append((line, f"{index + 1} {what}"))
                continue
            kind = node.get("kind")
            if isinstance(kind, str) and kind.endswith("List") and "items" in node:
                items = node["items"]
                if items is None:
                    continue
                if not isinstance(items, CommentedSeq):
                    vl, vc = node.lc.value("items")
                    errors.append((vl + 1, vc + 1, "items must be a list"))
                    continue
                for i, item in enumerate(items):
                    il, ic = items.lc.item(i)
                    if not isinstance(item, CommentedMap):
                        errors.append((il + 1, ic + 1, "list item is not an object"))
                        continue
                    docs.append((index, i, _to_plain(item, [source.MAX_NODES]), *pos(item, (il + 1, ic + 1)),
                                 _ruamel_positions(item)))
                continue
            plain = _to_plain(node, [source.MAX_NODES])
            docs.append((index, None, plain, line, col, _ruamel_positions(node)))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None)
        context = getattr(exc, "context", None)
        if isinstance(exc, MarkedYAMLError) and problem:
            message = f"{context}: {problem}" if context else str(problem)
        else:
            message = str(exc).strip().splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        errors.append((line, col, f"invalid YAML: {message}"))
    except TooManyNodes:
        errors.append((0, 0, "too many nodes"))
    except (RecursionError, ValueError, TypeError, IndexError):
        errors.append((0, 0, "no position"))
    return {"docs": docs, "errors": errors, "warnings": notes, "skipped": skipped}


def _new(text: str) -> dict[str, Any]:
    """The same summary from the loader as it is now."""
    docs, errs, warns, skips = loader._parse(text, "f")
    errors: list[tuple[Any, ...]] = []
    for e in errs:
        if e.message.startswith("nested more than"):
            errors.append(("deep",))
        elif "expands to more than" in e.message:
            errors.append((0, 0, "too many nodes"))
        elif e.line == 0 and not e.message.startswith("invalid YAML:"):
            errors.append((0, 0, "no position"))
        else:
            errors.append((e.line, e.column, e.message))
    skipped = []
    for s in skips:
        if s.reason == "empty file":
            continue
        number, _, rest = s.reason.removeprefix("document ").partition(" is ")
        what = rest.split(",")[0].removeprefix("a ")
        skipped.append((s.line, f"{number} {what}"))
    return {
        "docs": [(d.index, d.item, d.data, d.line, d.column, _reader_positions(d.positions)) for d in docs],
        "errors": errors,
        "warnings": [w.removeprefix("f: ").removesuffix("; skipped") for w in warns],
        "skipped": skipped,
    }


# libyaml's wording of a problem ruamel words differently (same position): ruamel's → libyaml's
# (the reader puts "mapping values", "special characters" and "found character '\t'" as ruamel did).
_WORDING: dict[str, str] = {}


def _same(text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ruamel warns about reused anchors
        old = _oracle(text)
    new = _new(text)
    for key in ("docs", "warnings", "skipped"):
        assert _nan_safe(new[key]) == _nan_safe(old[key]), (key, text)
    where = [e[:2] for e in old["errors"]]
    assert [e[:2] for e in new["errors"]] == where, (text, old["errors"], new["errors"])
    for (*_, msg_old), (*_, msg_new) in zip(old["errors"], new["errors"], strict=True):
        for ruamel_words, libyaml_words in _WORDING.items():
            msg_old = msg_old.replace(ruamel_words, libyaml_words)
        # a duplicate key's message quotes the values: a timestamp or tagged scalar prints differently
        msg_old, msg_new = msg_old.partition(" with value ")[0], msg_new.partition(" with value ")[0]
        libyaml_words = "did not find expected" in msg_new or "could not find expected" in msg_new
        assert msg_new == msg_old or libyaml_words, (text, msg_old, msg_new)


def _nan_safe(value: Any) -> Any:
    """NaN never equals itself: compare it as a marker."""
    if isinstance(value, float) and math.isnan(value):
        return "<nan>"
    if isinstance(value, dict):
        return {_nan_safe(k): _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_safe(v) for v in value]
    return value


# ---------------------------------------------------------------- every file of the project


def _files() -> list[Path]:
    roots = [ROOT / "examples", ROOT / "tests"] + ([CORPUS] if CORPUS.is_dir() else [])
    return sorted(
        p for root in roots for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
    )


def test_the_files_are_many() -> None:
    assert len(_files()) >= 90  # examples and test inputs (the corpus adds about 200 where present)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_file_reads_as_before(path: Path) -> None:
    try:
        text = loader.read_text(str(path))
    except Error:
        pytest.skip("not usable text (the loader refuses it before parsing)")
    _same(text)


def test_the_corpus_is_compared_where_present() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is absent")
    assert sum(1 for p in _files() if CORPUS in p.parents) >= 100


# ---------------------------------------------------------------- chosen cases

CASES = [
    "a: yes\nb: no\nc: on\nd: off\ne: y\nf: n\ng: True\nh: FALSE\ni: tRUE\n",
    "a: 0777\nb: 0o17\nc: 0x1F\nd: 0b101\ne: 1_000\nf: -0o17\ng: +0x1f\nh: 08\ni: 0_\nj: 00\n",
    "a: .inf\nb: -.Inf\nc: .nan\nd: 1.\ne: 1e3\nf: .5\ng: 1_0.5\nh: .5e+3\ni: .5e3\nj: -0.0\nk: 1:20\n",
    "a: ~\nb: null\nc:\nd: ''\ne: NULL\nf: Null\n",
    "a: 2001-12-14\nb: 2001-12-14t21:59:43.10-05:00\nc: 2001-12-14 21:59:43.10 -5\n"
    "d: 2001-12-15T02:59:43.1Z\ne: 2002-12-14 21:59:43\nf: 2001-12-14T21:59:43.123456789Z\n"
    "g: 2001-1-2 3:04:05\nh: 2001-12-14T21:59:43.9999999Z\n",
    "a: !!str 123\nb: !!int '12'\nc: !!float 1\nd: !custom x\ne: !custom {x: 1}\nf: ! 12\ng: =\nh: '<<'\n",
    "base: &b {x: 1, y: 2}\nm:\n  z: 0\n  <<: *b\n  y: 9\n",
    "a: &a {x: 1}\nb: &b {x: 2, w: 3}\nm:\n  <<: [*a, *b]\n  q: 1\n",
    "m:\n  <<: {p: 1}\n  q: 2\n",
    "a: &a 1\nm:\n  <<: *a\n",
    "m:\n  <<: [1]\n",
    "a: &a {x: 1}\nm:\n  <<: *a\n  <<: *a\n",
    "a: &x 1\nb: &x 2\nc: *x\n",
    "a: &x [1, *x]\n",
    "- &a {x: 1}\n- *a\n",
    "a: 1\nb: 2\na: {x: 1}\n",
    "1: a\n1.5: b\ntrue: c\n",
    "a: *x\n",
    "a: b: c\n",
    "a: [1, 2\n",
    "a: 'x\n",
    "a:\n\t- b\n",
    "{a:1}\n",
    '{"a": 1, "b": [true, null, 1.5, "x"]}',
    "",
    "# only a comment\n",
    "---\n---\na: 1\n",
    "hello\n",
    "- a\n- b\n",
    "42\n",
    "%YAML 1.1\n---\na: yes\nb: 0777\n...\n---\nc: on\n",
    "--- &d\na: 1\n",
    "--- !!map\na: 1\n",
    "apiVersion: v1\nkind: List\nitems:\n- kind: A\n  metadata: {name: a}\n- 3\n-   kind: B\n",
    "apiVersion: v1\nkind: List\nitems: 3\n",
    "apiVersion: v1\nkind: List\nitems:\n",
    "a: 2001-02-30\n",
    "a: !!int x\n",
    "a: 0b_\n",
    "a: |\n  x\n  y\nb: >\n  p\n  q\nc: \"\\u00e9\\x41\"\nd: 'it''s'\n",
    "a:\n- 1\n-\n  - 2\n  - [3, {b: c}]\n",
    "? complex\n: value\n",
    "k: v\n---\nk: v\n---\n- x\n---\nbad: [\n",
    "[" * 101 + "]" * 101,
    "\x1f",
    "a: b\x07\n",
    "a: 1\r\nb:\r\n  - 2\r\n",
    "a: \u00e9t\u00e9\nb: '\u00fcber'\n",
]


@pytest.mark.parametrize("text", ["a:\tb\n", "a: b\t# c\n", "a: 'b' \t\nc:\n  - d\t\n"])
def test_tabs_between_tokens_are_accepted_as_kubectl_does(text: str) -> None:
    # A known difference: ruamel.yaml refused a tab as separating white space; YAML and go-yaml allow it.
    assert _oracle(text)["errors"]
    [doc], errors, _, _ = loader._parse(text, "f")
    assert not errors and doc.data["a"] == "b"


_DENY_WITH_TAB = (
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: x\t\nspec:\n"
    "  endpointSelector: {}\n  deny:\n  - toEndpoints:\n    - matchLabels: {app: b}\n"
)


def test_the_deny_hint_of_a_file_ruamel_refuses_is_built_from_the_data() -> None:
    from cilia.k8s.validate import validate_result

    report = validate_result(loader.load_text(_DENY_WITH_TAB, "tab.yaml"))
    [error] = [e for e in report.errors if e.path == "spec.deny"]
    assert (error.line, error.column) == (7, 3) and error.hint and "egressDeny:" in error.hint


def test_fix_says_where_ruamel_cannot_read_what_the_reader_accepted() -> None:
    from cilia.k8s.fix import fix_text

    with pytest.raises(Error) as caught:
        fix_text(_DENY_WITH_TAB, "tab.yaml")
    error = caught.value
    assert (error.line, error.column) == (4, 10) and error.hint == "replace the tab with spaces"


def test_a_unicode_line_separator_outside_quotes_is_a_line_break() -> None:
    # A known difference: libyaml follows YAML 1.1, where NEL/LS/PS break lines (ruamel: YAML 1.2).
    _, [error], _, _ = loader._parse("a: x\u2028y\n", "f")
    assert error.message.startswith("invalid YAML") and error.line == 3


@pytest.mark.parametrize("text", CASES)
def test_chosen_cases_read_as_before(text: str) -> None:
    _same(text)


def test_list_items_merged_in_have_the_positions_of_their_document() -> None:
    text = "---\nkind: List\nbase: &b {items: [{kind: A}, 3]}\n<<: *b\n"
    [doc], [error], _, _ = loader._parse(text, "f")
    assert (doc.data, doc.index, doc.item, doc.line, doc.column) == ({"kind": "A"}, 0, 0, 2, 1)
    assert (error.message, error.line, error.column) == ("list item is not an object", 2, 1)


def test_scalar_tags_read_as_plain_values() -> None:
    [doc], errors, _, _ = loader._parse("a: !!str 123\nb: !custom x\nc: =\n", "f")
    assert not errors and doc.data == {"a": "123", "b": "x", "c": "="}


def test_a_complex_key_is_an_error_of_its_document() -> None:
    _, [error], _, _ = loader._parse("a: 1\n---\n? [1, 2]\n: v\n", "f")
    assert error.message == "invalid YAML in document 2: unhashable type: 'list'"


def test_an_alias_bomb_stops_at_the_node_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "MAX_NODES", 10_000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    text = "k: v\n---\n" + "\n".join(lines) + "\n"
    [doc], [error], _, _ = loader._parse(text, "f")
    assert doc.data == {"k": "v"}
    assert error.message == "document 2: document expands to more than 10000 nodes (YAML aliases?)"
    assert _new(text)["errors"] == _oracle(text)["errors"]  # the ruamel path stopped it too


# ---------------------------------------------------------------- generated documents

_TRICKY = st.sampled_from(
    ["yes", "no", "on", "off", "0777", "0o17", "0x1F", "0b11", "1_000", ".inf", "-.inf", ".nan", "~", "null",
     "", "true", "False", "1.5", "1e3", "-0", "2001-12-14", "2001-12-14T21:59:43.10Z", "2001-12-14 1:2:03",
     "'quoted'", '"dq \\u00e9"', "!!str 12", "!!int '7'", "!!float 3", "plain text", "a:b", "-x", "0.", ".5",
     "12:30", "+1", "=", "~x", "@x", "'<<'", "[]", "{}", "[1, two]", "{k: v}"]
)
_KEY = st.sampled_from(["a", "b", "kind", "items", "1", "true", "'q'", "x y", "0x1"])


@st.composite
def _document(draw: st.DrawFn, depth: int = 0) -> str:
    """A block mapping/list document as text, with anchors and aliases to earlier nodes."""
    anchors: list[str] = []

    def node(indent: int, d: int) -> str:
        choice = draw(st.integers(0, 5 if d < 3 else 1))
        pad = " " * indent
        if choice == 0 or choice == 1:
            value = draw(_TRICKY)
            if anchors and draw(st.integers(0, 6)) == 0:
                return f" *{draw(st.sampled_from(anchors))}"
            if draw(st.integers(0, 8)) == 0:
                name = f"n{len(anchors)}"
                anchors.append(name)
                return f" &{name} {value}"
            return f" {value}"
        if choice in (2, 3):
            keys = draw(st.lists(_KEY, min_size=1, max_size=4, unique=True))
            body = "".join(f"\n{pad}{k}:{node(indent + 2, d + 1)}" for k in keys)
            return body
        items = draw(st.integers(1, 3))
        return "".join(f"\n{pad}-{node(indent + 2, d + 1)}" for _ in range(items))

    keys = draw(st.lists(_KEY, min_size=1, max_size=5, unique=True))
    return "".join(f"{k}:{node(2, 1)}\n" for k in keys)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_document(), min_size=1, max_size=3))
def test_generated_documents_read_as_before(docs: list[str]) -> None:
    _same("---\n".join(docs))


# ---------------------------------------------------------------- start-up


def test_validate_does_not_import_ruamel() -> None:
    code = (
        "import sys\n"
        "from cilia.cli.main import main\n"
        "sys.argv = ['cilia', 'validate', '-f', 'examples/seed/deny-a-to-b-fixed.yaml']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('RUAMEL', any(m.startswith('ruamel') for m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert "RUAMEL False" in out.stdout and "valid" in out.stdout.lower(), out.stdout + out.stderr


def test_a_deny_hint_still_reads_the_tree() -> None:
    from cilia.k8s.validate import validate_paths

    result = validate_paths([ROOT / "examples" / "seed" / "deny-a-to-b.yaml"])
    hints = [e.hint for e in result.errors if e.hint]
    assert any("egressDeny" in h for h in hints), result.errors


def test_the_tree_of_a_list_item_is_that_item() -> None:
    text = (
        "# a comment\n---\napiVersion: v1\nkind: List\nitems:\n- kind: ConfigMap\n"
        "- kind: CiliumNetworkPolicy  # the one\n  spec:\n    deny: [{toEntities: [world]}]\n"
    )
    [_, cnp] = loader.load_text(text, "l.yaml").documents
    assert (cnp.index, cnp.item, cnp.line, cnp.column) == (0, 1, 7, 3)
    assert cnp.node["kind"] == "CiliumNetworkPolicy" and cnp.node.lc.line == 6  # ruamel's own tree
    assert cnp.position("spec.deny[0].toEntities") == (9, 13)
