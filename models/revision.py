"""Identity of an exported IR: a short content hash of its weights, and the weight format it holds.

Boundary: reads an IR folder's openvino_model.{xml,bin}; caches the answer in a small JSON file
next to them (keyed by size and mtime, so a re-export invalidates it) or, if that folder is
read-only, under $FASTDRAFT_HOME/revisions/. Knows nothing about how the IR was made.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from models.home import fastdraft_home

CACHE_NAME = ".fastdraft_revision.json"
REVISION_CHARS = 12
CHUNK = 8 << 20


def _stamp(ir_dir: Path) -> dict:
    files = [ir_dir / "openvino_model.xml", ir_dir / "openvino_model.bin"]
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}


def _cache_files(ir_dir: Path) -> list[Path]:
    key = hashlib.sha256(str(ir_dir.resolve()).encode()).hexdigest()[:16]
    return [ir_dir / CACHE_NAME, fastdraft_home() / "revisions" / f"{key}.json"]


def detect_weight_format(xml_path: Path) -> str:
    """int4 / int8 / fp16 / fp32, from the element types of the IR's Constant weights."""
    text = xml_path.read_text(encoding="utf-8", errors="replace")
    types = set(re.findall(r'<layer [^>]*type="Const"[^>]*>\s*<data [^>]*element_type="(\w+)"', text))
    if types & {"u4", "i4", "nf4"}:
        return "int4"
    if types & {"u8", "i8"}:
        return "int8"
    if "f16" in types:
        return "fp16"
    return "fp32"


def _compute(ir_dir: Path) -> dict:
    digest = hashlib.sha256()
    for name in ("openvino_model.xml", "openvino_model.bin"):
        with open(ir_dir / name, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    return {"revision": digest.hexdigest()[:REVISION_CHARS], "weight_format": detect_weight_format(ir_dir / "openvino_model.xml")}


def ir_identity(ir_dir: str | Path) -> dict:
    """{"revision": 12 hex chars, "weight_format": ...} for an IR folder; cached, so cheap after the first call."""
    ir_dir = Path(ir_dir)
    stamp = _stamp(ir_dir)
    caches = _cache_files(ir_dir)
    for cache in caches:
        try:
            data = json.loads(cache.read_text())
            if data.get("stamp") == stamp:
                return {"revision": data["revision"], "weight_format": data["weight_format"]}
        except (OSError, ValueError, KeyError):
            continue
    identity = _compute(ir_dir)
    for cache in caches:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"stamp": stamp, **identity}) + "\n")
            break
        except OSError:
            continue
    return identity


def ir_revision(ir_dir: str | Path) -> str:
    """Short content hash of the IR's weights (and graph)."""
    return ir_identity(ir_dir)["revision"]
