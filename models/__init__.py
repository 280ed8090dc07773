"""Where models come from and how they become OpenVINO IR: catalog, GGUF assembly, conversion, export, compatibility.

Public API (see each module for its boundary):
    resolve_model(spec, weight_format="int8", pull=True) -> ResolvedModel   models.resolve
    check_compatible(target, draft)                                          models.compat
    get_entry(name) -> CatalogEntry, CATALOG                                 models.catalog
    export_ir(hf_dir, out_dir, weight_format="int8", convert_tokenizer=True) models.export
    fastdraft_home() -> Path                                                 models.home
    ModelError and subclasses                                                models.errors
Pipeline: catalog entry -> gguf_source.fetch_gguf -> convert.gguf_to_hf (+ tokenizer_repair)
-> export.export_ir -> revision.ir_identity.
"""

from models.catalog import CATALOG, CatalogEntry, get_entry
from models.compat import check_compatible
from models.errors import ModelError, ModelNotPreparedError, UnknownModelError, VocabMismatchError
from models.home import fastdraft_home
from models.resolve import ResolvedModel, resolve_model

__all__ = [
    "CATALOG", "CatalogEntry", "ModelError", "ModelNotPreparedError", "ResolvedModel", "UnknownModelError",
    "VocabMismatchError", "check_compatible", "fastdraft_home", "get_entry", "resolve_model",
]
