"""Initialize a draft from a same-vocabulary sibling: keep some of its layers, optionally cut its output layer.

    python -m training.prune --sibling ~/.cache/fastdraft/models/qwen2.5-coder-0.5b-instruct/hf \
        --keep-layers 0,1,2,3,22,23 [--vocab-map DIR | --corpus CORPUS --draft-vocab-size 32768] \
        --out runs/qwen-6l/hf
    # then heal it: python -m training.pretrain --corpus CORPUS --stage code-nl --init runs/qwen-6l/hf ...

The sibling (e.g. qwen2.5-coder-0.5b-instruct for the 1.5B target) shares the tokenizer, so its first
layers read the same ids and its last layers feed the same output space; keeping the first and the last
few layers and healing briefly is the thrifty path of issue 4. The output layer is cut to the rows of
the tokens in the vocab map (from the corpus histogram, or reused from another draft); with
--reduce-input the input embedding is cut too and tied to it (see training/vocab_map.py). Writes a draft HF
folder (training/draft_folder.py) with the sibling's tokenizer and the provenance of the cut.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from training import vocab_map as vm
from training.draft_folder import save_draft
from training.presets import count_params, reduce_output_layer, reduce_tied_vocabulary

log = logging.getLogger("training.prune")


def keep_layers(model, layers: list[int]) -> None:
    """Keep decoder layers `layers` (in that order) and renumber them so the KV cache indexes stay dense."""
    blocks = model.model.layers
    total = len(blocks)
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0 or max(layers) >= total:
        raise ValueError(f"--keep-layers must be distinct indexes in [0, {total}), got {layers}")
    model.model.layers = torch.nn.ModuleList([blocks[i] for i in layers])
    for new_index, block in enumerate(model.model.layers):
        if hasattr(block, "self_attn") and hasattr(block.self_attn, "layer_idx"):
            block.self_attn.layer_idx = new_index
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    config.num_hidden_layers = len(layers)
    if hasattr(config, "max_window_layers"):
        config.max_window_layers = min(config.max_window_layers, len(layers))


def prune(sibling: Path, layers: list[int], out: Path, vocab: vm.VocabMap | None) -> Path:
    """`vocab.input_reduced`: cut input AND output to the map (tied, plain causal LM); else the output only."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sibling, dtype=torch.float32)
    before = count_params(model)
    keep_layers(model, layers)
    if vocab is not None:
        if vocab.target_vocab_size != model.config.vocab_size:
            raise SystemExit(f"vocab map is for a {vocab.target_vocab_size}-token target; {sibling} has "
                             f"{model.config.vocab_size} embedding rows")
        if vocab.input_reduced:
            reduce_tied_vocabulary(model, vocab.draft_to_target)
        else:
            reduce_output_layer(model, vocab.draft_vocab_size, keep_ids=vocab.draft_to_target)
    provenance = {"command": "training.prune", "sibling": str(sibling), "keep_layers": layers,
                  "params_before": before, "params_after": count_params(model),
                  "params_after_excluding_input_embedding": count_params(model, exclude_input_embedding=True),
                  "draft_vocab_size": vocab.draft_vocab_size if vocab else None}
    log.info("pruned: %s", json.dumps(provenance))
    return save_draft(model, out, sibling, vocab, provenance=provenance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.prune", description=__doc__.splitlines()[0])
    parser.add_argument("--sibling", required=True, type=Path, help="HF folder of a model sharing the target's vocabulary")
    parser.add_argument("--keep-layers", required=True, help="comma-separated layer indexes to keep, e.g. 0,1,2,3,22,23")
    parser.add_argument("--out", required=True, type=Path, help="output draft HF folder")
    parser.add_argument("--vocab-map", type=Path, default=None, help="folder holding a draft_vocab_map.json to reuse")
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder whose token histogram picks the vocabulary")
    parser.add_argument("--draft-vocab-size", type=int, default=None,
                        help="cut the output layer to the N most frequent corpus tokens (needs --corpus)")
    parser.add_argument("--reduce-input", action="store_true",
                        help="cut the input embedding too (tied, plus one row for every other token): the draft "
                             "then reads draft ids; a 4-layer 0.5B cut to 32k tokens fits in 100 MB as int8")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    layers = [int(x) for x in args.keep_layers.split(",") if x.strip()]
    vocab = None
    if args.vocab_map is not None:
        vocab = vm.load(args.vocab_map)
    elif args.draft_vocab_size:
        if args.corpus is None:
            raise SystemExit("--draft-vocab-size needs --corpus (the token histogram that picks the vocabulary)")
        from training.data import Corpus

        corpus = Corpus(args.corpus)
        full = json.loads((args.sibling / "config.json").read_text())["vocab_size"]
        counts = np.zeros(full, dtype=np.int64)
        counts[: corpus.vocab_size] = corpus.token_counts()
        special = [t["id"] for t in json.loads((args.sibling / "tokenizer.json").read_text()).get("added_tokens", [])]
        vocab = vm.select(counts, args.draft_vocab_size, always_keep=[corpus.separator_id] + special)
        log.info("draft vocabulary: %d tokens, corpus coverage %.4f", vocab.draft_vocab_size, vocab.coverage(counts))
    if args.reduce_input:
        if vocab is None:
            raise SystemExit("--reduce-input needs a vocabulary (--vocab-map or --corpus with --draft-vocab-size)")
        vocab = dataclasses.replace(vocab, input_reduced=True)
    prune(args.sibling, layers, args.out, vocab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
