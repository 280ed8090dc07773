"""Align a draft to its target by sequence-level KD, export it, evaluate it, and publish it if it is better.

    python -m training.align --target qwen2.5-coder-1.5b-instruct --draft runs/qwen-6l-heal/hf \
        --data runs/kd-data/generations.jsonl --out runs/align --steps 300 --batch-size 8 --seq-len 512 --bf16 \
        --eval-prompts runs/kd-data/prompts-eval.jsonl --publish ~/.cache/fastdraft/drafts/qwen2.5-coder-1.5b \
        [--server-url http://127.0.0.1:8000] [--force]

Phases, in order (a rerun of the same command resumes training from its last checkpoint):
1. refuse a draft whose vocabulary does not match the target's (models.compat.check_compatible, and the
   draft's input rows vs the target's), before any data is read or any step taken;
2. fine-tune on the target's own generations (training.generate's JSONL): cross-entropy on the output
   tokens only (prompt tokens are context, label -100); rows are prompt+output, right-padded; the run is
   resumable exactly (training/trainer.py); held-out eval prompt ids are never trained on;
3. export `<out>/hf` to `<out>/ir` (OpenVINO IR, int8 by default);
4. evaluate the new draft and the currently published one on the eval prompts with our engine and print
   before/after acceptance;
5. publish atomically to --publish (training/publish.py) only when the new draft's mean accepted length
   (or --compare-by speedup) is higher, or with --force; then POST {server}/admin/reload.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from training import trainer
from training.generate import DatasetError, read_jsonl

log = logging.getLogger("training.align")


class VocabularyMismatch(SystemExit):
    pass


def check_vocabulary(target, draft_hf: Path) -> None:
    """Refuse the draft before training when it cannot propose for this target."""
    from models.compat import check_compatible

    from training import vocab_map as vm

    try:
        check_compatible(target.tokenizer_dir, draft_hf)
    except Exception as error:  # models.compat raises VocabMismatchError (or fails to read a folder)
        raise VocabularyMismatch(f"draft {draft_hf} does not match target {target.name}: {error}") from None
    target_config = json.loads((Path(target.ir_dir) / "config.json").read_text())
    draft_config = json.loads((draft_hf / "config.json").read_text())
    vocab = vm.load(draft_hf)
    if vocab is not None and vocab.target_vocab_size != target_config["vocab_size"]:
        raise VocabularyMismatch(f"{draft_hf / vm.MAP_JSON}: made for a {vocab.target_vocab_size}-token target, "
                                 f"{target.name} has {target_config['vocab_size']}")
    reads = vocab.model_vocab_size if vocab is not None and vocab.input_reduced else target_config["vocab_size"]
    if draft_config["vocab_size"] != reads:
        raise VocabularyMismatch(f"draft {draft_hf} reads {draft_config['vocab_size']} token ids, expected {reads} "
                                 f"(target {target.name} has {target_config['vocab_size']})")


def tokenize_records(records: list[dict], tokenizer, seq_len: int, label_table, sources: list[str],
                     input_table=None) -> list[tuple]:
    """(input ids, labels) per record: prompt (left-truncated) + output, loss on output tokens only.

    `input_table` maps target ids to the ids an input-reduced draft reads (None: it reads target ids).
    """
    examples = []
    for record, where in zip(records, sources):
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("output"), str):
            raise DatasetError(f"{where}: needs string fields 'prompt' and 'output'")
        prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        output = tokenizer(record["output"], add_special_tokens=False)["input_ids"]
        if not output:
            continue
        output = output[:seq_len]
        prompt = prompt[-(seq_len + 1 - len(output)):] if len(output) <= seq_len else []
        ids = np.asarray(prompt + output, dtype=np.int64)
        labels = np.full(len(ids), -100, dtype=np.int64)
        targets = np.asarray(output, dtype=np.int64)
        labels[len(prompt):] = targets if label_table is None else label_table[targets]
        if input_table is not None:
            ids = input_table[ids]
        examples.append((ids[:-1], labels[1:]))  # position t predicts token t + 1
    return examples


def batch_fn(examples: list[tuple], args, pad_id: int):
    """Pure function of the step: epoch-wise permutations seeded by (seed, epoch)."""
    count = len(examples)

    def make_batch(step: int):
        inputs = np.full((args.batch_size, args.seq_len), pad_id, dtype=np.int64)
        labels = np.full((args.batch_size, args.seq_len), -100, dtype=np.int64)
        for row in range(args.batch_size):
            index = step * args.batch_size + row
            order = np.random.default_rng([args.seed, index // count]).permutation(count)
            ids, target = examples[order[index % count]]
            inputs[row, : len(ids)] = ids
            labels[row, : len(target)] = target
        return inputs, labels

    return make_batch


def load_data(paths: list[Path], exclude_ids: set[str]) -> tuple[list[dict], list[str]]:
    records, where = [], []
    for path in paths:
        for number, record in enumerate(read_jsonl(path), start=1):
            if record.get("id") in exclude_ids:
                continue
            records.append(record)
            where.append(f"{path}: record {number}")
    return records, where


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.align", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="target model: catalog name, IR folder or HF folder")
    parser.add_argument("--target-format", default="int8", help="weight format to resolve the target with")
    parser.add_argument("--draft", required=True, type=Path, help="draft HF folder to fine-tune (pretrain/prune output)")
    parser.add_argument("--data", action="append", type=Path, default=None,
                        help="generations JSONL from training.generate (repeatable)")
    parser.add_argument("--eval-prompts", type=Path, default=None,
                        help="held-out prompts (default: prompts-eval.jsonl next to the first --data)")
    parser.add_argument("--eval-limit", type=int, default=16, help="evaluate on at most this many prompts")
    parser.add_argument("--eval-max-new-tokens", type=int, default=128, help="tokens per prompt when evaluating")
    parser.add_argument("--num-draft-tokens", type=int, default=5, help="draft length k for evaluation")
    parser.add_argument("--export-format", default="int8", choices=("int8", "fp16", "fp32"), help="IR weight format")
    parser.add_argument("--precision", default=None, help="OpenVINO precision hint for evaluation (f32 in tests)")
    parser.add_argument("--publish", type=Path, default=None, help="folder the server loads the draft from")
    parser.add_argument("--compare-by", choices=("mean_accepted_length", "wall_clock_speedup"),
                        default="mean_accepted_length", help="figure that decides whether the new draft is better")
    parser.add_argument("--force", action="store_true", help="publish even if not better than the published draft")
    parser.add_argument("--server-url", default=None, help="after publishing, POST {url}/admin/reload")
    parser.add_argument("--skip-eval", action="store_true", help="do not evaluate (publishing then needs --force)")
    trainer.add_train_args(parser, steps=200, lr=3e-4, batch_size=8, seq_len=512)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers import AutoTokenizer

    from models.resolve import resolve_model
    from training.draft_folder import load_draft, save_draft

    rank, _ = trainer.setup_distributed(trainer.resolve_device(args.device))  # nccl on GPUs, as train() would
    # 1. vocabulary check, before anything else
    target = resolve_model(args.target, weight_format=args.target_format)
    check_vocabulary(target, args.draft)
    if not args.data:
        raise SystemExit("--data is required (generations JSONL from training.generate)")
    eval_path = args.eval_prompts or args.data[0].parent / "prompts-eval.jsonl"
    eval_prompts = read_jsonl(eval_path) if eval_path.exists() else []
    # 2. fine-tune on the target's generations
    model, vocab = load_draft(args.draft)
    tokenizer = AutoTokenizer.from_pretrained(args.draft)
    records, where = load_data(args.data, {p["id"] for p in eval_prompts})
    input_table = vocab.input_table() if vocab else None
    examples = tokenize_records(records, tokenizer, args.seq_len, vocab.label_table() if vocab else None, where,
                                input_table=input_table)
    if not examples:
        raise SystemExit(f"no training examples in {', '.join(map(str, args.data))}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    if input_table is not None:
        pad_id = int(input_table[pad_id])  # padding is never a label; any row the draft reads will do
    config = {"command": "training.align", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "target": target.name, "target_revision": target.revision, "examples": len(examples),
              "output_tokens": int(sum((lab != -100).sum() for _, lab in examples)), "eval_prompts": len(eval_prompts)}
    log.info("config: %s", json.dumps(config, default=str))
    hf_out, ir_out = args.out / "hf", args.out / "ir"
    result = trainer.train(model, batch_fn(examples, args, pad_id), args, config,
                           on_finish=lambda m: save_draft(m, hf_out, args.draft, vocab, provenance=config))
    if not result["finished"] or rank != 0:
        return 0
    # 3. export
    from training.export import export_draft

    export_draft(hf_out, ir_out, args.export_format)
    # 4. evaluate new vs published
    report = {"new": None, "published": None}
    if not args.skip_eval and eval_prompts:
        from training.evaluate import evaluate

        prompts = eval_prompts[: args.eval_limit]
        report["new"] = evaluate(target, resolve_model(str(ir_out)), prompts, args.num_draft_tokens,
                                 args.eval_max_new_tokens, args.precision)["overall"]
        if args.publish is not None and (args.publish / "openvino_model.xml").exists():
            report["published"] = evaluate(target, resolve_model(str(args.publish)), prompts, args.num_draft_tokens,
                                           args.eval_max_new_tokens, args.precision)["overall"]
        (args.out / "align_eval.json").write_text(json.dumps(report, indent=1) + "\n")
        for name, figs in report.items():
            if figs:
                print(f"{name:>9}: alpha {figs['alpha']:.3f}  mean accepted length {figs['mean_accepted_length']:.2f}  "
                      f"wall-clock {figs['wall_clock_speedup']}x  per position {figs['acceptance_per_position']}")
    # 5. publish if better (or forced), then ask the server to reload
    if args.publish is None:
        return 0
    new, old = report["new"], report["published"]
    better = new is not None and (old is None or new[args.compare_by] > old[args.compare_by])
    if not (better or args.force):
        print(f"not published: the new draft is not better than {args.publish} by {args.compare_by} (use --force)")
        return 0
    from training.publish import publish, request_reload

    publish(ir_out, args.publish)
    print(f"published {ir_out} -> {args.publish}")
    if args.server_url:
        try:
            print("server reload:", json.dumps(request_reload(args.server_url, args.publish)))
        except OSError as error:
            log.error("published, but the reload request to %s failed: %s", args.server_url, error)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
