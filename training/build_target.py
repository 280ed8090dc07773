"""The target of a draft build: what a target spec is on disk, and where a draft of a given name is published.

Boundary: reads the target's folders (config.json, tokenizer files, weights' presence) through
models.resolve, preparing the target (pull, convert, export) only when asked to; loads no model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BuildRefused(SystemExit):
    """The build cannot start (bad target, taken name, budget too small, ...); the message says why and what to do."""


@dataclass(frozen=True)
class TargetInfo:
    spec: str
    name: str
    config: dict  # the target's config.json
    tokenizer_dir: Path  # holds tokenizer.json (checked)
    hf_dir: Path | None  # safetensors weights, for the SVD embedding init; None for an IR-only target
    ir_dir: Path | None  # None while the target is not exported yet (a --plan of an HF folder)
    revision: str | None
    chat_template: bool

    @property
    def vocab_size(self) -> int:
        return int(self.text_config["vocab_size"])

    @property
    def text_config(self) -> dict:
        return self.config.get("text_config", self.config)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config["hidden_size"])

    @property
    def arch(self) -> str:
        """The draft architecture closest to the target's: Qwen2 (q/k/v biases) for Qwen2 targets, else Llama."""
        return "qwen2" if str(self.config.get("model_type", "")).startswith("qwen2") else "llama"

    @property
    def params(self) -> int:
        return target_params(self.text_config)

    @property
    def weight_bytes(self) -> int | None:
        return (self.ir_dir / "openvino_model.bin").stat().st_size if self.ir_dir else None

    def describe(self) -> dict:
        return {"spec": self.spec, "name": self.name, "model_type": self.config.get("model_type"),
                "vocab_size": self.vocab_size, "hidden_size": self.hidden_size, "params": self.params,
                "weight_bytes": self.weight_bytes, "chat_template": self.chat_template,
                "tokenizer_dir": str(self.tokenizer_dir), "hf_dir": str(self.hf_dir) if self.hf_dir else None,
                "ir_dir": str(self.ir_dir) if self.ir_dir else None, "revision": self.revision}


def target_params(config: dict) -> int:
    """Parameters of a decoder-only transformer from its config (embedding counted once when tied)."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    attention = hidden * heads * head_dim * 2 + hidden * kv * 2
    mlp = 3 * hidden * config["intermediate_size"]
    embedding = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp) + embedding


def check_tokenizer(folder: Path, spec: str) -> None:
    """Refuse a target whose folder has no usable tokenizer: corpus, vocabulary and KD data are in its ids."""
    from training.corpus import TargetTokenizer

    try:
        TargetTokenizer(folder)
    except SystemExit as error:
        raise BuildRefused(f"target {spec!r} has no usable tokenizer: {error}. A draft is trained on its target's "
                           "own tokenizer; give a folder saved with it (tokenizer.json, tokenizer_config.json), "
                           "or the GGUF file, whose tokenizer converts with it") from None


def has_chat_template(folder: Path) -> bool:
    config = folder / "tokenizer_config.json"
    in_config = config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))
    return in_config or (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file()


def read_target(spec: str, prepare: bool) -> TargetInfo:
    """The target's config and tokenizer; with `prepare`, pulled/converted/exported to an IR first.

    Without `prepare` (a --plan) nothing is built: a catalog name or GGUF file must already be prepared,
    an HF folder is read as it is (its IR does not exist yet)."""
    from models.errors import ModelError, ModelNotPreparedError
    from models.resolve import hf_dir_for, is_ir_dir, resolve_model

    path = Path(spec).expanduser()
    hf_folder = path if path.is_dir() and not is_ir_dir(path) and (path / "config.json").is_file() else None
    if hf_folder is not None:
        check_tokenizer(hf_folder, spec)  # before an export that would fail on it, minutes later
    try:
        resolved = resolve_model(spec, weight_format="int8", pull=prepare)
    except ModelNotPreparedError:
        if hf_folder is None:
            raise BuildRefused(f"target {spec!r} is not prepared on this machine, so its vocabulary and size are "
                               f"unknown: run `fastdraft models pull {spec}` first, or run the build without "
                               "--plan (its first stage prepares the target)") from None
        resolved = None
    except ModelError as error:
        raise BuildRefused(f"target {spec!r}: {error}") from None
    if resolved is not None:
        check_tokenizer(resolved.tokenizer_dir, spec)
    ir_dir = resolved.ir_dir if resolved else None
    tokenizer_dir = resolved.tokenizer_dir if resolved else hf_folder
    hf_dir = hf_folder
    if hf_dir is None and resolved is not None and (hf_dir_for(resolved.name) / "config.json").is_file():
        hf_dir = hf_dir_for(resolved.name)
    if hf_dir is not None and not any(hf_dir.glob("*.safetensors")):
        hf_dir = None
    config_dir = ir_dir if ir_dir is not None else hf_folder
    config = json.loads((config_dir / "config.json").read_text())
    name = display_name(spec, resolved.name if resolved else hf_folder.name)
    return TargetInfo(spec=str(spec), name=name, config=config, tokenizer_dir=Path(tokenizer_dir), hf_dir=hf_dir,
                      ir_dir=ir_dir, revision=resolved.revision if resolved else None,
                      chat_template=has_chat_template(Path(tokenizer_dir)))


def display_name(spec: str, resolved_name: str) -> str:
    """A catalog name as it is; a folder or file by its own name (a cache folder `<name>/ir-int8` by <name>)."""
    path = Path(spec).expanduser()
    if not path.exists():
        return resolved_name
    base = path.stem if path.suffix == ".gguf" else path.name
    if base in ("ir", "hf") or base.startswith("ir-"):
        base = path.resolve().parent.name
    return base


def publish_dir(name: str) -> Path:
    """Where draft `name` is published: a shipped draft's committed folder, else $FASTDRAFT_HOME/drafts/<name>."""
    from models.catalog import CATALOG
    from models.home import draft_dir

    if not NAME_PATTERN.match(name):
        raise BuildRefused(f"--name must be letters, digits, '.', '_' or '-' (at most 100), got {name!r}")
    entry = CATALOG.get(name)
    if entry is not None and entry.kind == "local_ir":
        return entry.local_ir_dir
    if entry is not None:
        raise BuildRefused(f"--name {name!r} is a catalog model (a target), so `--draft {name}` would load that "
                           "model, not this draft; choose another --name")
    return draft_dir(name)
