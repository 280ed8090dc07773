"""Catalog lookup, GGUF checks (magic, truncation, sha256) and part assembly: no model needed except
the first bytes of the smollm2 GGUF for the truncation fixture."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from models import gguf_source
from models.catalog import CATALOG, CatalogEntry, get_entry, shipped_ir_dir
from models.errors import ChecksumMismatchError, CorruptGGUFError, ModelError, ModelNotPreparedError, UnknownModelError
from models.home import fastdraft_home


def smollm2_gguf_source() -> Path:
    entry = get_entry("smollm2-135m-instruct")
    gguf_source.ensure_packages(entry)
    return gguf_source.source_files(entry)[0]


def test_home_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTDRAFT_HOME", str(tmp_path))
    assert fastdraft_home() == tmp_path
    monkeypatch.delenv("FASTDRAFT_HOME")
    assert fastdraft_home() == Path("~/.cache/fastdraft").expanduser()


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        get_entry("qwen-9000")
    message = str(info.value)
    assert "qwen-9000" in message
    for name in CATALOG:
        assert name in message
    assert isinstance(info.value, ModelError)


def test_catalog_entries_are_complete():
    for entry in CATALOG.values():
        if entry.kind == "gguf":
            assert entry.packages and entry.version and len(entry.gguf_sha256) == 64, entry.name
            assert entry.tokenizer_repair is not None, entry.name


def test_shipped_drafts_are_complete_small_and_documented():
    # what the server's default draft needs: an int8 IR, its vocabulary map, the tokenizer for the
    # vocabulary check, and a model card; at most 100 MB in the repository
    import json

    shipped = [e for e in CATALOG.values() if e.kind == "local_ir"]
    assert shipped
    for entry in shipped:
        folder = shipped_ir_dir(entry)
        for name in ("openvino_model.xml", "openvino_model.bin", "config.json", "draft_vocab_map.json",
                     "tokenizer.json", "README.md"):
            assert (folder / name).is_file(), f"{entry.name}: {name} missing"
        assert sum(f.stat().st_size for f in folder.iterdir()) <= 100_000_000, entry.name
        assert json.loads((folder / "draft_vocab_map.json").read_text())["input"] == "draft"


def test_shipped_draft_missing_folder_is_clear(tmp_path):
    entry = CatalogEntry(name="tiny-draft", description="test", kind="local_ir", local_ir_dir=tmp_path / "tiny-draft")
    with pytest.raises(ModelNotPreparedError, match="tiny-draft"):
        shipped_ir_dir(entry)
    (tmp_path / "tiny-draft").mkdir()
    (tmp_path / "tiny-draft" / "openvino_model.xml").write_text("<net/>")
    assert shipped_ir_dir(entry) == tmp_path / "tiny-draft"


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(CorruptGGUFError, match="not a GGUF file"):
        gguf_source.check_gguf(path)


@pytest.mark.parametrize("keep_bytes", [64, 1 << 20])
def test_truncated_gguf(tmp_path, keep_bytes):
    path = tmp_path / "truncated.gguf"
    with open(smollm2_gguf_source(), "rb") as stream:
        path.write_bytes(stream.read(keep_bytes))
    with pytest.raises(CorruptGGUFError, match="truncated or corrupt"):
        gguf_source.check_gguf(path)


def test_whole_gguf_passes():
    gguf_source.check_gguf(smollm2_gguf_source())


def test_sha256_mismatch_names_file_expected_and_got(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"hello")
    got = hashlib.sha256(b"hello").hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        gguf_source.verify_sha256(path, "0" * 64)
    message = str(info.value)
    assert str(path) in message and "0" * 64 in message and got in message
    gguf_source.verify_sha256(path, got)


def _parts_entry(monkeypatch, tmp_path, chunks: list[bytes], sha: str) -> CatalogEntry:
    parts = []
    for i, chunk in enumerate(chunks):
        part = tmp_path / f"part{i:02d}.bin"
        part.write_bytes(chunk)
        parts.append(part)
    entry = dataclasses.replace(get_entry("qwen2.5-coder-0.5b-instruct"), name="fake", gguf_sha256=sha)
    monkeypatch.setattr(gguf_source, "ensure_packages", lambda entry: None)
    monkeypatch.setattr(gguf_source, "source_files", lambda entry: parts)
    monkeypatch.setattr(gguf_source, "check_gguf", lambda path: None)
    return entry


def test_assembly_joins_parts_in_order(monkeypatch, tmp_path):
    chunks = [b"GGUF", b"-part-one-", b"part-two"]
    entry = _parts_entry(monkeypatch, tmp_path, chunks, hashlib.sha256(b"".join(chunks)).hexdigest())
    out = gguf_source.fetch_gguf(entry, tmp_path / "gguf")
    assert out.read_bytes() == b"".join(chunks)
    assert not list((tmp_path / "gguf").glob("*.partial"))
    assert gguf_source.fetch_gguf(entry, tmp_path / "gguf") == out  # second call: stamp, no work


def test_assembly_refuses_mismatch(monkeypatch, tmp_path):
    entry = _parts_entry(monkeypatch, tmp_path, [b"GGUF", b"xx"], "f" * 64)
    with pytest.raises(ChecksumMismatchError, match="expected f{64}, got [0-9a-f]{64}"):
        gguf_source.fetch_gguf(entry, tmp_path / "gguf")
    assert not list((tmp_path / "gguf").iterdir())  # neither the file nor a .partial is left behind
