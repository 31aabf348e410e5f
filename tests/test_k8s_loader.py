"""cilia.k8s.loader and cilia.k8s.source: files, directories, stdin, Lists, positions, clean errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cilia.k8s import loader, source
from cilia.k8s.loader import load_paths, load_text
from cilia.k8s.source import format_path, parse_path
from tests.conftest import SEED


def test_seed_files_load_with_positions() -> None:
    result = load_paths([SEED / "deny-a-to-b.yaml", SEED / "app-a.yaml"])
    assert result.errors == ()
    assert [(d.kind, d.name, d.index, d.line, d.column) for d in result.documents] == [
        ("CiliumNetworkPolicy", "deny-app-a-to-app-b", 0, 2, 1),
        ("Deployment", "app-a", 0, 2, 1),
    ]
    deny, deploy = result.documents
    assert deny.position(("spec", "deny")) == (10, 3)
    assert deny.position(parse_path("spec.deny[0].toEndpoints[0].matchLabels.app")) == (13, 9)
    assert deny.position("spec.deny[0].toEndpoints[0].matchLabels.app") == (13, 9)
    assert deploy.position(parse_path("spec.template.spec.containers[0].ports[0].containerPort")) == (20, 11)
    # a missing field is located at its deepest existing parent
    assert deny.position(("spec", "egress", 0)) == (6, 1)


def test_path_round_trip() -> None:
    path = ("spec", "egress", 0, "toPorts", 12, "ports", 0, "port")
    assert format_path(path) == "spec.egress[0].toPorts[12].ports[0].port"
    assert parse_path(format_path(path)) == path
    assert format_path(()) == ""


def test_directory_is_sorted_filtered_and_recursive_only_with_r(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: z}\n")
    (tmp_path / "a.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = load_paths([tmp_path])  # as kubectl apply -f DIR: the directory's own files
    assert [Path(f).name for f in result.files] == ["a.json"]
    with loader.using_selection(loader.Selection(recursive=True)):  # -R
        result = load_paths([tmp_path])
    assert [Path(f).name for f in result.files] == ["a.json", "z.yml"]
    assert [d.name for d in result.documents] == ["a", "z"]
    only_dirs = tmp_path / "only-dirs"
    (only_dirs / "sub").mkdir(parents=True)
    [err] = load_paths([only_dirs]).errors
    assert err.message == "no .yaml/.yml/.json files in directory (-R reads its subdirectories)"


def test_multi_document_and_list_and_json_dump() -> None:
    text = (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\n"
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: two}\n"
        "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: three\n"
    )
    docs = load_text(text, "m.yaml").documents
    assert [(d.name, d.index, d.item, d.line) for d in docs] == [
        ("one", 0, None, 1),
        ("two", 1, 0, 8),
        ("three", 1, 1, 11),
    ]
    assert docs[2].position(("metadata", "name")) == (14, 5)
    dump = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}],
    }
    [pod] = load_text(json.dumps(dump, indent=2), "dump.json").documents
    assert (pod.kind, pod.name, pod.line) == ("Pod", "p", 5)  # the item's opening brace


def test_stdin() -> None:
    result = load_paths(["-"], stdin=io.BytesIO(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: s}\n"))
    assert (result.files, [d.name for d in result.documents]) == (("-",), ["s"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\n", ("invalid YAML", 2, 1)),
        ("kind: Pod\n  bad: indent\n", ("invalid YAML", 2, 6)),
        ("a: 1\na: 2\n", ("invalid YAML", 2, 1)),
        ("- 1\n- 2\n", ("document 1 is a list, not an object (a mapping with apiVersion and kind)", 1, 1)),
        (
            "just a string\n",
            ("document 1 is a str, not an object (a mapping with apiVersion and kind)", 1, 1),
        ),
        ("", ("no objects in file", 0, 0)),
        ("apiVersion: v1\nkind: List\nitems: 3\n", ("items must be a list", 3, 8)),
    ],
    ids=[
        "unclosed-flow",
        "bad-indent",
        "duplicate-key",
        "list-doc",
        "scalar-doc",
        "empty-file",
        "items-not-list",
    ],
)
def test_malformed_input_gives_clean_errors(text: str, expected: tuple[str, int, int]) -> None:
    [err] = loader.parse_text(text, "bad.yaml")[1]  # a file that must hold objects (verify's --expect)
    message, line, col = expected
    assert err.message.startswith(message), err.message
    assert (err.file, err.line, err.column) == ("bad.yaml", line, col)


def test_empty_documents_are_skipped_with_a_warning() -> None:
    result = load_text("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n", "e.yaml")
    assert result.errors == ()
    assert [d.name for d in result.documents] == ["x"]
    assert result.warnings == ("e.yaml: document 2 is empty; skipped",)  # after the trailing ---


def test_unreadable_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"\x7fELF\x02\x01\x00\x00binary")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nb: caf\xe9\n")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 200)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 100)
    result = load_paths([junk, latin, big, tmp_path / "missing.yaml", empty_dir])
    assert [(Path(e.file).name, e.line, e.message, e.unreadable) for e in result.errors] == [
        ("missing.yaml", 0, "no such file or directory", True),
        ("empty", 0, "no .yaml/.yml/.json files in directory", True),
        ("junk.yaml", 0, "binary data (NUL bytes), not a YAML or JSON manifest", True),
        ("latin.yaml", 2, "not UTF-8 text (byte 0xe9 at offset 11)", True),
        ("big.yaml", 0, "file is larger than 0 MiB", True),
    ]


def test_positions_survive_a_byte_order_mark() -> None:
    [doc] = load_text("\ufeffapiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n", "bom.yaml").documents
    assert doc.position(("metadata", "name")) == (4, 3)


def test_alias_bomb_and_deep_nesting_are_refused_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "MAX_NODES", 10_000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    [bomb] = load_text("\n".join(lines) + "\n", "lol.yaml").errors
    assert bomb.message == "document 1: document expands to more than 10000 nodes (YAML aliases?)"
    [deep] = load_text("a: " + "[" * 500 + "]" * 500, "deep.yaml").errors
    assert (deep.message, deep.line, deep.column) == ("nested more than 100 levels deep", 1, 104)


def test_what_is_skipped_and_what_is_an_object_with_a_mistake() -> None:
    result = load_text(
        "name: ci\non: push\n---\napiVersion: v2\nname: chart\n---\n- a\n---\n"
        "metadata: {name: x}\nspec: {}\n---\nKind: Pod\nmetadata: {name: y}\n",
        "m.yaml",
    )
    assert [(s.line, s.reason) for s in result.skipped] == [
        (1, "document 1 has no apiVersion and kind: not a Kubernetes object"),
        (4, "document 2 has no kind: not a Kubernetes object"),
        (7, "document 3 is a list, not an object (a mapping with apiVersion and kind)"),
    ]
    assert [d.index for d in result.documents] == [3, 4]  # kept: validation names what is missing
    with loader.using_selection(loader.Selection(strict=True)):
        strict = load_text("name: ci\n", "w.yaml")
    assert [(e.line, e.message) for e in strict.errors] == [
        (1, "document 1 has no apiVersion and kind: not a Kubernetes object (refused by --strict)")
    ]
    assert load_text("{{ .Values.x }}\n", "t.yaml").skipped[0].reason.startswith("a Go/Helm template")
