"""Shared fixtures: tiny random models exported to OpenVINO IR, and the real smollm2-135m-instruct.

Tiny models are built here from a fixed seed. Their output layer is scaled up so the logits are peaked:
random models otherwise have near-uniform logits, and argmax near-ties would test rounding, not logic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY_CONFIG = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                   tie_word_embeddings=False)


def build_tiny_model(out_dir: Path, seed: int, perturb_from: Path | None = None, noise: float = 0.0) -> Path:
    """A tiny random Qwen2 causal LM saved as a Hugging Face folder (optionally a noisy copy of another)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if perturb_from is not None:
        model = Qwen2ForCausalLM.from_pretrained(perturb_from)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(noise * parameter.std() * torch.randn_like(parameter))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**TINY_CONFIG))
        with torch.no_grad():
            model.lm_head.weight.mul_(40.0)
    model.eval().save_pretrained(out_dir)
    return out_dir


def export_tiny(hf_dir: Path, ir_dir: Path) -> Path:
    from models.export import export_ir

    return export_ir(hf_dir, ir_dir, weight_format="fp32", convert_tokenizer=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """IR folders: 'target', 'near' (target + small noise: partial acceptance), 'far' (unrelated)."""
    root = tmp_path_factory.mktemp("tiny")
    target_hf = build_tiny_model(root / "target-hf", seed=0)
    near_hf = build_tiny_model(root / "near-hf", seed=1, perturb_from=target_hf, noise=0.3)
    far_hf = build_tiny_model(root / "far-hf", seed=2)
    return {name: export_tiny(hf, root / f"{name}-ir")
            for name, hf in (("target", target_hf), ("near", near_hf), ("far", far_hf))}


@pytest.fixture(scope="session")
def smollm2_fp32():
    from models.resolve import resolve_model

    return resolve_model("smollm2-135m-instruct", weight_format="fp32")


@pytest.fixture(scope="session")
def smollm2_int8():
    from models.resolve import resolve_model

    return resolve_model("smollm2-135m-instruct", weight_format="int8")


def run_at_once(calls: list) -> list:
    """Run the calls at once, one thread each; their results in order."""
    import threading

    results: list = [None] * len(calls)

    def run(i):
        results[i] = calls[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def generate_at_once(engine, requests) -> list[list[int]]:
    """Start every request before reading any, drain each in its own thread: they share the engine's steps."""
    generations = [engine.start(request) for request in requests]
    return run_at_once([lambda g=g: [t for group in g for t in group.token_ids] for g in generations])
