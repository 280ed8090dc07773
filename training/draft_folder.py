"""A draft's Hugging Face folder: weights + config, the TARGET's tokenizer files, and the vocab map if reduced.

Boundary: reads and writes local folders only. This is what export_ir() turns into an OpenVINO IR; the
tokenizer files are the target's, so the exported draft carries a tokenizer identical to the target's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from training import vocab_map as vm

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def copy_tokenizer(tokenizer_dir: str | Path, folder: str | Path) -> None:
    tokenizer_dir, folder = Path(tokenizer_dir), Path(folder)
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"{tokenizer_dir / 'tokenizer.json'}: the target tokenizer folder has no tokenizer.json")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy2(tokenizer_dir / name, folder / name)


def save_draft(model, folder: str | Path, tokenizer_dir: str | Path, vocab: vm.VocabMap | None,
               provenance: dict | None = None) -> Path:
    """Write the HF folder (atomically: a .partial sibling renamed into place)."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    copy_tokenizer(tokenizer_dir, partial)
    if vocab is not None:
        vocab.save(partial)
    if provenance is not None:
        (partial / "fastdraft_provenance.json").write_text(json.dumps(provenance, indent=1, default=str) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def load_draft(folder: str | Path):
    """(model fp32, vocab map or None) from a draft HF folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from safetensors.torch import load_file
    from transformers import AutoConfig

    from training.presets import reduce_output_layer

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder / 'config.json'}: not a Hugging Face model folder")
    vocab = vm.load(folder)
    if vocab is None or vocab.input_reduced:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if vocab is not None and model.config.vocab_size != vocab.model_vocab_size:
            raise ValueError(f"{folder}: config vocab_size {model.config.vocab_size}, {vm.MAP_JSON} says "
                             f"{vocab.draft_vocab_size} + 1 unknown row")
        return model, vocab
    # reduced output layer: build, cut the head, then load the weights strictly
    config = AutoConfig.from_pretrained(folder)
    if vocab.target_vocab_size != config.vocab_size:
        raise ValueError(f"{folder / vm.MAP_JSON}: target_vocab_size {vocab.target_vocab_size} != "
                         f"config vocab_size {config.vocab_size}")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    reduce_output_layer(model, vocab.draft_vocab_size)
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    if "lm_head.weight" in state and state["lm_head.weight"].shape[0] != vocab.draft_vocab_size:
        raise ValueError(f"{folder}: lm_head has {state['lm_head.weight'].shape[0]} rows, "
                         f"{vm.MAP_JSON} says {vocab.draft_vocab_size}")
    model.load_state_dict(state, strict=True)
    return model, vocab
