"""Turn a model spec into a ready OpenVINO IR folder: the one entry point the server and tools call.

Boundary: drives gguf_source -> convert -> export over the cache under $FASTDRAFT_HOME/models;
never loads a model for inference. Each step writes `<step>.partial` and renames it when done, so a
finished step is skipped and an interrupted one restarts cleanly. A per-model lock file keeps two
processes from building the same step at once.

Spec forms, tried in this order:
- an existing folder with openvino_model.xml: an IR folder, used as is;
- an existing folder with config.json: a Hugging Face folder, exported to
  $FASTDRAFT_HOME/models/hf-<folder name>-<hash of path + newest mtime>/ir-<format>;
- an existing `.gguf` file: converted and exported under gguf-<stem>-<sha256[:12]>/ (or under the
  catalog name when its sha256 is a catalog entry's);
- a catalog name: $FASTDRAFT_HOME/models/<name>/{gguf,hf,ir-int8,ir-int4,ir-fp16,ir-fp32};
- the name of a draft built here (python -m training.build): its IR folder $FASTDRAFT_HOME/drafts/<name>.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from models.catalog import CATALOG, CatalogEntry, get_entry, shipped_ir_dir
from models.convert import gguf_to_hf
from models.errors import InvalidModelSpecError, ModelNotPreparedError
from models.export import check_weight_format, export_ir
from models.gguf_source import check_gguf, fetch_gguf, sha256_file
from models.home import model_dir, models_home
from models.revision import ir_identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # catalog name, or a name derived from the spec's path
    ir_dir: Path  # openvino_model.xml + tokenizer IRs + HF tokenizer files + config.json
    tokenizer_dir: Path  # loadable by transformers.AutoTokenizer (here: the IR folder itself)
    revision: str  # short content hash of the IR weights
    weight_format: str  # int8 / int4 / fp16 / fp32 as found in the IR


def is_ir_dir(path: Path) -> bool:
    return (path / "openvino_model.xml").is_file() and (path / "openvino_model.bin").is_file()


def ir_dir_for(name: str, weight_format: str) -> Path:
    """Where the IR of cached model `name` in `weight_format` lives (whether or not it exists yet)."""
    return model_dir(name) / f"ir-{weight_format}"


def hf_dir_for(name: str) -> Path:
    """Where the converted Hugging Face folder of catalog/GGUF model `name` lives."""
    return model_dir(name) / "hf"


@contextlib.contextmanager
def _model_lock(name: str):
    folder = model_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _resolved(name: str, ir_dir: Path) -> ResolvedModel:
    identity = ir_identity(ir_dir)
    return ResolvedModel(name=name, ir_dir=ir_dir, tokenizer_dir=ir_dir, revision=identity["revision"],
                         weight_format=identity["weight_format"])


def _not_prepared(name: str, weight_format: str) -> ModelNotPreparedError:
    return ModelNotPreparedError(
        f"model {name!r} has no {weight_format} IR in {ir_dir_for(name, weight_format)}; "
        f"run `fastdraft models pull {name} --weight-format {weight_format}` (or resolve with pull=True)"
    )


def _from_hf_dir(name: str, hf_dir: Path, weight_format: str) -> Path:
    ir_dir = ir_dir_for(name, weight_format)
    if not is_ir_dir(ir_dir):
        export_ir(hf_dir, ir_dir, weight_format)
    return ir_dir


def _from_gguf(name: str, gguf_path: Path, repair: str | None, weight_format: str) -> Path:
    hf_dir = hf_dir_for(name)
    if not (hf_dir / "config.json").is_file():
        gguf_to_hf(gguf_path, hf_dir, repair)
    return _from_hf_dir(name, hf_dir, weight_format)


def _resolve_entry(entry: CatalogEntry, weight_format: str, pull: bool) -> ResolvedModel:
    if entry.kind == "local_ir":
        return _resolved(entry.name, shipped_ir_dir(entry))
    return _built(entry.name, weight_format, pull, lambda: _build_entry(entry, weight_format))


def _build_entry(entry: CatalogEntry, weight_format: str) -> None:
    hf_dir = hf_dir_for(entry.name)
    if (hf_dir / "config.json").is_file():
        _from_hf_dir(entry.name, hf_dir, weight_format)
    else:
        gguf_path = fetch_gguf(entry, model_dir(entry.name) / "gguf")
        _from_gguf(entry.name, gguf_path, entry.tokenizer_repair, weight_format)


def _hf_dir_key(hf_dir: Path) -> str:
    newest = max((f.stat().st_mtime_ns for f in hf_dir.rglob("*") if f.is_file()), default=0)
    return hashlib.sha256(f"{hf_dir.resolve()}|{newest}".encode()).hexdigest()[:12]


def _gguf_sha256_cached(gguf_path: Path) -> str:
    """sha256 of a GGUF file, remembered per (path, size, mtime) so re-resolving does not rehash GBs."""
    index_path = models_home() / ".gguf_sha256.json"
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        index[key] = sha256_file(gguf_path)
        index_path.parent.mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps(index, indent=1) + "\n")
    return index[key]


def _built(name: str, weight_format: str, pull: bool, build) -> ResolvedModel:
    """The IR of cached model `name`, running `build()` once (under the model's lock) if it is missing."""
    ir_dir = ir_dir_for(name, weight_format)
    if not is_ir_dir(ir_dir):
        if not pull:
            raise _not_prepared(name, weight_format)
        with _model_lock(name):
            if not is_ir_dir(ir_dir):  # another process may have finished it while we waited
                build()
    return _resolved(name, ir_dir)


def _resolve_path(path: Path, weight_format: str, pull: bool) -> ResolvedModel:
    if path.is_dir() and is_ir_dir(path):
        name = path.resolve().parent.name if path.name.startswith("ir-") else path.name  # cache layout: <name>/ir-<fmt>
        return _resolved(name, path)
    if path.is_dir() and (path / "config.json").is_file():
        name = f"hf-{path.name}-{_hf_dir_key(path)}"
        return _built(name, weight_format, pull, lambda: _from_hf_dir(name, path, weight_format))
    if path.is_file() and path.suffix == ".gguf":
        sha = _gguf_sha256_cached(path)
        entry = next((e for e in CATALOG.values() if e.gguf_sha256 == sha), None)
        if entry is None:  # a catalog digest already vouches for the file
            check_gguf(path)
        name, repair = (entry.name, entry.tokenizer_repair) if entry else (f"gguf-{path.stem}-{sha[:12]}", None)
        return _built(name, weight_format, pull, lambda: _from_gguf(name, path, repair, weight_format))
    raise InvalidModelSpecError(
        f"model spec {str(path)!r} is neither an OpenVINO IR folder (openvino_model.xml), a Hugging Face "
        "folder (config.json) nor a .gguf file"
    )


def resolve_model(spec: str, weight_format: str = "int8", pull: bool = True) -> ResolvedModel:
    """Resolve `spec` (catalog name, HF folder, .gguf file or IR folder) to a ready IR folder.

    `weight_format` selects the IR to build or reuse for catalog names, HF folders and GGUF files
    (an IR folder is used as is, and its actual format is reported). With `pull=False` nothing is
    downloaded, converted or exported: a missing step raises ModelNotPreparedError.
    """
    check_weight_format(weight_format)
    spec = str(spec)
    if spec in CATALOG:
        return _resolve_entry(get_entry(spec), weight_format, pull)
    path = Path(spec).expanduser()
    if path.exists():
        return _resolve_path(path, weight_format, pull)
    if "/" in spec or spec.endswith(".gguf") or spec.startswith("."):
        raise InvalidModelSpecError(f"model spec {spec!r}: no such file or folder")
    return _resolve_entry(get_entry(spec), weight_format, pull)  # raises UnknownModelError listing the names
