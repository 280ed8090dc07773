"""Pretrain a draft on the tokenized corpus: stage 1 natural language, stage 2 code + NL (FastDraft).

    # stage 1, from scratch, 32k output layer, embeddings from an SVD of the target's
    python -m training.pretrain --corpus ~/.cache/fastdraft/corpus/qwen2.5 --stage nl --preset draft-12m \
        --target-hf ~/.cache/fastdraft/models/qwen2.5-coder-1.5b-instruct/hf --embed-init svd \
        --steps 2000 --batch-size 8 --seq-len 512 --bf16 --out runs/draft-12m-nl
    # stage 2 continues from stage 1's weights on the code + NL mix
    python -m training.pretrain --corpus ... --stage code-nl --init runs/draft-12m-nl/hf --out runs/draft-12m-code
    # heal a pruned sibling (training/prune.py) on code
    python -m training.pretrain --corpus ... --stage code-nl --init runs/qwen-6l/hf --steps 300 --out runs/qwen-6l-heal
    # DDP: the same command under torchrun (gloo on CPU, nccl is not needed)
    torchrun --nproc-per-node 2 -m training.pretrain ...

Resumable: rerun the same command; it continues from `<out>/checkpoints/latest` exactly (batches are a
function of the step, see training/data.py). Writes `<out>/config.json` (resolved config),
`<out>/log.jsonl` (loss per step) and, when done, `<out>/hf/` (a transformers folder with the target's
tokenizer and, for a reduced vocabulary, draft_vocab_map.json/.npy; see training/vocab_map.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from training import presets, trainer
from training import vocab_map as vm
from training.data import Corpus
from training.draft_folder import load_draft, save_draft

log = logging.getLogger("training.pretrain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path, help="corpus folder written by training.corpus")
    parser.add_argument("--stage", default="nl", help="stage mix from the corpus manifest (nl, code-nl)")
    parser.add_argument("--preset", default="draft-12m", choices=sorted(presets.PRESETS),
                        help="architecture preset (ignored with --init DIR)")
    parser.add_argument("--arch", choices=presets.ARCHITECTURES, default=None, help="override the preset's arch")
    parser.add_argument("--draft-vocab-size", type=int, default=None,
                        help="reduced output layer: keep the N most frequent corpus tokens (0: full vocabulary; "
                             "default: the preset's)")
    parser.add_argument("--vocab-map", type=Path, default=None,
                        help="folder holding a draft_vocab_map.json to reuse instead of selecting one")
    parser.add_argument("--init", default="random",
                        help="'random', or a draft HF folder to start from (a pruned sibling, an earlier stage's hf/)")
    parser.add_argument("--target-hf", type=Path, default=None,
                        help="the target's HF folder: its config gives the full vocab size; needed for --embed-init svd")
    parser.add_argument("--embed-init", choices=("random", "svd"), default="random",
                        help="svd: initialize embeddings from a rank-h projection of the target's")
    parser.add_argument("--reduce-input", action="store_true",
                        help="with a reduced vocabulary: cut the input embedding too and tie it to the output "
                             "layer (the draft reads draft ids, see training/vocab_map.py)")
    trainer.add_train_args(parser, steps=1000, lr=1e-3, batch_size=8, seq_len=512)
    return parser


def build_draft(args, corpus: Corpus):
    """(model, vocab map or None, description) from --init / --preset / vocabulary flags."""
    if args.init != "random":
        model, vocab = load_draft(args.init)
        return model, vocab, {"init": str(args.init)}
    overrides = {"arch": args.arch}
    if args.draft_vocab_size is not None:
        overrides["draft_vocab_size"] = args.draft_vocab_size or None
    cfg = presets.from_name(args.preset, **overrides)
    full_vocab = corpus.vocab_size
    if args.target_hf is not None:
        full_vocab = max(full_vocab, json.loads((args.target_hf / "config.json").read_text())["vocab_size"])
    vocab = None
    if args.vocab_map is not None:
        vocab = vm.load(args.vocab_map)
        if vocab is None:
            raise SystemExit(f"{args.vocab_map / vm.MAP_JSON}: not found")
    elif cfg.draft_vocab_size:
        counts = np.zeros(full_vocab, dtype=np.int64)
        counts[: corpus.vocab_size] = corpus.token_counts()
        keep = [corpus.separator_id] + _special_ids(corpus)
        vocab = vm.select(counts, cfg.draft_vocab_size, always_keep=keep)
        log.info("draft vocabulary: %d of %d tokens, corpus coverage %.4f", vocab.draft_vocab_size, full_vocab,
                 vocab.coverage(counts))
    if vocab is not None and vocab.target_vocab_size != full_vocab:
        raise SystemExit(f"vocab map is for a {vocab.target_vocab_size}-token target, this corpus/target has {full_vocab}")
    if args.reduce_input and vocab is None:
        raise SystemExit("--reduce-input needs a reduced vocabulary (--draft-vocab-size N or --vocab-map DIR)")
    reduce_input = vocab is not None and (args.reduce_input or vocab.input_reduced)
    if reduce_input:
        # build over the full vocabulary (tied), initialize, then cut input and output rows together
        vocab = dataclasses.replace(vocab, input_reduced=True)
        cfg = presets.replace(cfg, draft_vocab_size=None, tie_embeddings=True)
    elif vocab is not None:
        cfg = presets.replace(cfg, draft_vocab_size=vocab.draft_vocab_size)
    model = presets.build_model(cfg, full_vocab, seed=args.seed, eos_token_id=corpus.separator_id)
    if args.embed_init == "svd":
        if args.target_hf is None:
            raise SystemExit("--embed-init svd needs --target-hf")
        from training.embed_init import init_from_target

        init_from_target(model, args.target_hf, vocab.draft_to_target if vocab and not reduce_input else None)
    if reduce_input:
        presets.reduce_tied_vocabulary(model, vocab.draft_to_target)
        cfg = presets.replace(cfg, draft_vocab_size=vocab.draft_vocab_size)
    return model, vocab, {"preset": cfg.to_dict(), "embed_init": args.embed_init}


def _special_ids(corpus: Corpus) -> list[int]:
    """Added/special tokens of the target tokenizer (chat markers): always nameable by the draft."""
    path = Path(corpus.manifest["tokenizer"]["dir"]) / "tokenizer.json"
    if not path.exists():
        return []
    return sorted(int(t["id"]) for t in json.loads(path.read_text()).get("added_tokens", []) if t["id"] < corpus.vocab_size)


def batch_fn(corpus: Corpus, args, mix: dict[str, float], vocab: vm.VocabMap | None):
    table = vocab.label_table() if vocab is not None else None
    input_table = vocab.input_table() if vocab is not None else None

    def make_batch(step: int):
        windows = corpus.batch(step, args.batch_size, args.seq_len, mix, args.seed)  # [B, L + 1] target ids
        inputs, labels = np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])
        # inputs: target ids (or draft ids for an input-reduced draft); labels: output rows, -100 for a
        # token the draft cannot name
        return (inputs if input_table is None else input_table[inputs]), (labels if table is None else table[labels])

    return make_batch


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    corpus = Corpus(args.corpus)
    mix = corpus.stage_mix(args.stage)
    model, vocab, origin = build_draft(args, corpus)
    config = {"command": "training.pretrain", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "mix": mix, "origin": origin, "params": presets.count_params(model),
              "draft_vocab_size": vocab.draft_vocab_size if vocab else None,
              "corpus_tokens": {d: corpus.domain_tokens(d) for d in mix}}
    log.info("config: %s", json.dumps(config, default=str))
    tokenizer_dir = corpus.manifest["tokenizer"]["dir"]

    def finish(trained) -> None:
        save_draft(trained, args.out / "hf", tokenizer_dir, vocab, provenance=config)
        log.info("saved %s", args.out / "hf")

    result = trainer.train(model, batch_fn(corpus, args, mix, vocab), args, config, on_finish=finish)
    log.info("result: %s", json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
