"""Building the datapath object: cached by source hash, a clear error without clang. No root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cilia.datapath.bpf import build, loader

needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed")


def copy_sources(dst: Path) -> Path:
    dst.mkdir()
    for name in build.SOURCES:
        shutil.copy(build.SRC_DIR / name, dst / name)
    return dst


def test_source_hash_follows_content(tmp_path: Path) -> None:
    src = copy_sources(tmp_path / "src")
    h = build.source_hash(src)
    assert h == build.source_hash(build.SRC_DIR)
    (src / "cilia.h").write_text((src / "cilia.h").read_text() + "\n/* changed */\n")
    assert build.source_hash(src) != h


def test_missing_clang_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no clang anywhere
    with pytest.raises(build.BuildError, match=r"clang not found.*apt-get install clang"):
        build.build(out_dir=tmp_path / "cache")


@needs_clang
def test_build_is_cached_and_compile_errors_are_reported(tmp_path: Path) -> None:
    first = build.build(out_dir=tmp_path / "cache")
    assert first.name == f"datapath-{build.source_hash()}.o"
    stamp = first.stat().st_mtime_ns
    assert build.build(out_dir=tmp_path / "cache") == first
    assert first.stat().st_mtime_ns == stamp  # not recompiled
    src = copy_sources(tmp_path / "src")
    (src / "datapath.c").write_text((src / "datapath.c").read_text() + "\nint broken(void) { return x; }\n")
    with pytest.raises(build.BuildError, match="use of undeclared identifier 'x'"):
        build.build(src, out_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.name]  # no half-written object


@needs_clang
def test_spec_lists_maps_and_programs_without_loading(tmp_path: Path) -> None:
    from cilia.datapath.maps.sizes import LAYOUTS

    spec = loader.load_spec(build.build(out_dir=tmp_path / "cache"))
    assert [(p.name, p.section) for p in spec.programs] == [("from_container", "tc"), ("to_container", "tc")]
    assert {m.name: (m.type, m.key_size, m.value_size, m.max_entries) for m in spec.maps} == {
        "cilia_ipcache4": ("lpm_trie", 8, 8, 524288),
        "cilia_ipcache6": ("lpm_trie", 20, 8, 524288),
        "cilia_endpoints": ("hash", 4, 16, 4096),
        "cilia_lxc": ("hash", 20, 20, 8192),
        "cilia_policy": ("lpm_trie", 16, 12, 1048576),
        "cilia_ct": ("lru_hash", 44, 32, 262144),
        "cilia_ct4": ("lru_hash", 20, 32, 262144),
        "cilia_events": ("ringbuf", 0, 0, 1 << 20),
        "cilia_evrl": ("hash", 4, 16, 4096),
        "cilia_metrics": ("percpu_array", 4, 16, 64),
        "cilia_config": ("array", 4, 16, 1),
        "cilia_lb4": ("hash", 12, 8, 65536),
        "cilia_lb4_ct": ("lru_hash", 16, 8, 65536),
        "cilia_lb4_rev": ("lru_hash", 16, 8, 65536),
        "cilia_lb6": ("hash", 24, 20, 65536),
        "cilia_lb6_ct": ("lru_hash", 40, 20, 65536),
        "cilia_lb6_rev": ("lru_hash", 40, 20, 65536),
        "cilia_dns_redirect": ("hash", 4, 8, 4096),
        "cilia_dns_rev": ("lru_hash", 16, 8, 65536),
    }
    # the Python layouts (what `cilia bpf` opens pins with) match the C structs
    assert {m.name: (m.key_size, m.value_size) for m in spec.maps} == LAYOUTS
