"""Grow a trained draft deeper without changing what it computes, so pretraining can go on at more depth.

    python -m training.grow --draft runs/d/pretrained --layers 8 --out runs/d/grown

Each layer of the trained draft is followed by copies of itself (the extra layers spread evenly, earlier
layers first) whose two residual-branch outputs, the attention's `o_proj` and the MLP's `down_proj`, are
zero: a copy adds nothing to the residual stream, so the grown model's logits equal the original's, and
further training starts from the trained loss instead of from scratch (depth up-scaling by stacking, with
the new branches zero-initialised like a residual network's last layers). The copies' other weights give
the new layers a trained starting point once their output projections move off zero.

Boundary: HF draft folder in, HF draft folder out (same tokenizer files and vocab map); no data, no training.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from training.draft_folder import load_draft, save_draft

log = logging.getLogger("training.grow")

# the weights that write into the residual stream; zeroing them makes a layer the identity
RESIDUAL_OUTPUTS = ("self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias")


def layer_plan(old_layers: int, new_layers: int) -> list[tuple[int, bool]]:
    """For each new layer: (the old layer it copies, whether it is an identity copy)."""
    if new_layers < old_layers:
        raise ValueError(f"--layers ({new_layers}) must be at least the draft's {old_layers} layers")
    extra, remainder = divmod(new_layers - old_layers, old_layers)
    plan = []
    for layer in range(old_layers):
        plan.append((layer, False))
        plan.extend((layer, True) for _ in range(extra + (layer < remainder)))
    return plan


def grow(model, new_layers: int):
    """A new model (same dtype) with `new_layers` layers that computes what `model` computes."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    old_layers = config.num_hidden_layers
    plan = layer_plan(old_layers, new_layers)
    config.num_hidden_layers = new_layers
    if getattr(config, "layer_types", None):
        config.layer_types = [model.config.layer_types[source] for source, _ in plan]
    grown = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    if grown.lm_head.weight.shape != model.lm_head.weight.shape:  # a reduced output layer (training/vocab_map.py)
        from training.presets import reduce_output_layer

        reduce_output_layer(grown, model.lm_head.weight.shape[0])
    old_state = model.state_dict()
    state = {}
    pattern = re.compile(r"model\.layers\.(\d+)\.(.+)")
    for name, tensor in old_state.items():
        match = pattern.fullmatch(name)
        if match is None:
            state[name] = tensor.clone()
    for new_index, (source, identity) in enumerate(plan):
        prefix = f"model.layers.{source}."
        for name, tensor in old_state.items():
            if name.startswith(prefix):
                suffix = name[len(prefix):]
                copied = tensor.clone()
                if identity and suffix in RESIDUAL_OUTPUTS:
                    copied = torch.zeros_like(copied)
                state[f"model.layers.{new_index}.{suffix}"] = copied
    grown.load_state_dict(state, strict=True)
    if config.tie_word_embeddings:
        grown.tie_weights()
    return grown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.grow", description=__doc__.splitlines()[0])
    parser.add_argument("--draft", required=True, type=Path, help="the trained draft's HF folder")
    parser.add_argument("--layers", required=True, type=int, help="depth of the grown draft")
    parser.add_argument("--out", required=True, type=Path, help="HF folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, vocab = load_draft(args.draft)
    grown = grow(model, args.layers)
    plan = layer_plan(model.config.num_hidden_layers, args.layers)
    layers = [f"{source}{' (identity copy)' if identity else ''}" for source, identity in plan]
    save_draft(grown, args.out, args.draft, vocab,
               provenance={"command": "training.grow", "grown_from": str(args.draft), "layers": layers})
    log.info("%s: %d -> %d layers, %.2fM -> %.2fM params", args.out, model.config.num_hidden_layers, args.layers,
             sum(p.numel() for p in model.parameters()) / 1e6, sum(p.numel() for p in grown.parameters()) / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
