"""Errors raised by the `models` package: one base class, one subclass per way a model can fail to be usable.

Boundary: plain exception types; every message names the model, file, field or value at fault.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class: a model cannot be found, fetched, converted, exported or paired."""


class UnknownModelError(ModelError, KeyError):
    """A catalog name that is not in the catalog."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelNotPreparedError(ModelError):
    """The model is known but not on disk, and pulling was not allowed (or the shipped folder is missing)."""


class PackageInstallError(ModelError):
    """pip could not install a package that carries model weights."""


class ChecksumMismatchError(ModelError):
    """An assembled or given file does not have the sha256 the catalog expects."""


class CorruptGGUFError(ModelError):
    """A file is not a readable GGUF (bad magic, truncated, unparsable)."""


class ConversionError(ModelError):
    """GGUF -> Hugging Face conversion or the tokenizer repair failed."""


class ExportError(ModelError):
    """Hugging Face -> OpenVINO IR export failed or produced an incomplete folder."""


class InvalidModelSpecError(ModelError):
    """A model spec that is neither a catalog name, an HF folder, a .gguf file nor an IR folder."""


class VocabMismatchError(ModelError):
    """A draft whose tokenizer differs from the target's (vocabulary or special ids)."""
