"""Align a draft to its target by knowledge distillation, export it, evaluate it, and publish it if it is better.

    python -m training.align --target qwen2.5-coder-1.5b-instruct --draft runs/qwen-6l-heal/hf \
        --data runs/kd-data/generations.jsonl --out runs/align --steps 300 --batch-size 8 --seq-len 512 --bf16 \
        --eval-prompts runs/kd-data/prompts-eval.jsonl --publish ~/.cache/fastdraft/drafts/qwen2.5-coder-1.5b \
        [--server-url http://127.0.0.1:8000] [--force]
    # or from what the server served (fastdraft serve --capture-dir runs/capture):
    python -m training.align --target qwen2.5-coder-1.5b-instruct --draft <draft HF folder> \
        --from-traffic runs/capture --out runs/refresh --publish <served draft folder> --server-url ...

Phases, in order (a rerun of the same command resumes training from its last checkpoint):
1. refuse a draft whose vocabulary does not match the target's (models.compat.check_compatible, and the
   draft's input rows vs the target's), and a capture that is not this target's (training/traffic.py), before
   any step is taken;
2. fine-tune on the target's own outputs: from --data (training.generate's JSONL: cross-entropy on the output
   tokens, sequence-level KD) and/or --from-traffic (served choices with the target's top-K log-probabilities:
   (1 - --kd-weight) x cross-entropy + --kd-weight x KL from the target's top-K distribution, training/distill.py).
   Prompt tokens are context (label -100); the run is resumable exactly (training/trainer.py). Held out and
   never trained on: --eval-prompts ids, and the newest --held-out-fraction of the traffic (the split is
   frozen in <out>/traffic_split.json on the first run, so a resume trains on the same records);
3. export `<out>/hf` to `<out>/ir` (OpenVINO IR, int8 by default);
4. evaluate the new draft and the currently published one with our engine (greedy, k = --num-draft-tokens) on
   the eval prompts and the held-out traffic, per task, and print before/after acceptance;
5. publish atomically to --publish (training/publish.py) only when the new draft's mean accepted length (or
   --compare-by speedup) is higher overall and no task's acceptance falls by more than --max-task-regression,
   or with --force; then POST {server}/admin/reload. `<out>/align_summary.json` records the data used, the
   figures per task before and after, and the decision.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from fastdraft.deprecated_flags import add_alias
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
    """Pure function of the step: epoch-wise permutations seeded by (seed, epoch).

    Examples are (inputs, labels) or, from traffic, (inputs, labels, top ids, top logprobs); when any carries
    the target's top-K, batches carry it too ([batch, seq_len, K], id -1 where a row has none).
    """
    count = len(examples)
    top_k = max((example[2].shape[1] for example in examples if len(example) > 2), default=0)

    def make_batch(step: int):
        inputs = np.full((args.batch_size, args.seq_len), pad_id, dtype=np.int64)
        labels = np.full((args.batch_size, args.seq_len), -100, dtype=np.int64)
        top_ids = np.full((args.batch_size, args.seq_len, top_k), -1, dtype=np.int64)
        top_logprobs = np.zeros((args.batch_size, args.seq_len, top_k), dtype=np.float32)
        for row in range(args.batch_size):
            index = step * args.batch_size + row
            order = np.random.default_rng([args.seed, index // count]).permutation(count)
            example = examples[order[index % count]]
            ids, target = example[:2]
            inputs[row, : len(ids)] = ids
            labels[row, : len(target)] = target
            if len(example) > 2:
                width = example[2].shape[1]
                top_ids[row, : len(ids), :width] = example[2]
                top_logprobs[row, : len(ids), :width] = example[3]
        return (inputs, labels, top_ids, top_logprobs) if top_k else (inputs, labels)

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


def trainable_draft(draft: Path, out: Path) -> Path:
    """The draft as an HF folder: a served draft that is only an IR folder is read back (training/ir_import.py)."""
    if (draft / "openvino_model.xml").exists() and not any(draft.glob("*.safetensors")):
        from training.ir_import import IRImportError, import_ir

        imported = out / "imported-draft"
        if not (imported / "config.json").exists():
            try:
                import_ir(draft, imported)
            except IRImportError as error:
                raise SystemExit(f"--draft {draft}: {error}") from None
            log.info("imported the IR draft %s into %s", draft, imported)
        return imported
    return draft


def frozen_traffic_split(args, target, vocab_size: int):
    """The traffic split of this run: chosen on its first invocation and kept in <out>/traffic_split.json, so a
    resume (while the server keeps capturing) trains and evaluates on the same records."""
    from training.traffic import TrafficError, TrafficSplit, load_split

    split = load_split(args.from_traffic, target.name, target.revision, vocab_size, args.held_out_fraction)
    saved = args.out / "traffic_split.json"
    if not saved.exists():
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"train": [r["id"] for r in split.train],
                                     "held_out": [r["id"] for r in split.held_out]}) + "\n")
        return split
    chosen = json.loads(saved.read_text())
    by_id = {r["id"]: r for r in split.train + split.held_out}
    missing = [i for i in chosen["train"] + chosen["held_out"] if i not in by_id]
    if missing:
        raise TrafficError(f"{saved}: this run trains on {len(missing)} records no longer in {args.from_traffic} "
                           f"(e.g. {missing[0]}; shards deleted?); start a new --out")
    return TrafficSplit([by_id[i] for i in chosen["train"]], [by_id[i] for i in chosen["held_out"]], split.report,
                        split.tasks)


def first_per_task(prompts: list[dict], limit: int) -> list[dict]:
    """The first `limit` prompts of each task, in their order (a big task does not crowd out the others)."""
    seen: dict[str, int] = {}
    kept = []
    for prompt in prompts:
        task = str(prompt.get("task", "chat"))
        seen[task] = seen.get(task, 0) + 1
        if seen[task] <= limit:
            kept.append(prompt)
    return kept


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.align", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="target model: catalog name, IR folder or HF folder")
    parser.add_argument("--target-weight-format", dest="target_format", default="int8",
                        help="weight format to resolve the target with")
    add_alias(parser, "--target-format", "--target-weight-format", dest="target_format")
    parser.add_argument("--draft", required=True, type=Path,
                        help="draft to fine-tune: an HF folder (pretrain/prune output) or a served IR folder")
    parser.add_argument("--data", action="append", type=Path, default=None,
                        help="generations JSONL from training.generate (repeatable; mixed with --from-traffic to "
                             "keep what the draft learnt before)")
    parser.add_argument("--from-traffic", type=Path, default=None,
                        help="a capture folder of fastdraft serve --capture-dir: align on what was served")
    parser.add_argument("--held-out-fraction", type=float, default=0.1,
                        help="the newest fraction of the traffic, evaluated on and never trained on")
    parser.add_argument("--kd-weight", type=float, default=0.5,
                        help="on traffic: weight of the KL from the target's top-K against cross-entropy on the "
                             "served token (0: sequence-level KD only, 1: the KL only)")
    parser.add_argument("--eval-prompts", type=Path, default=None,
                        help="held-out prompts (default: prompts-eval.jsonl next to the first --data)")
    parser.add_argument("--eval-limit", type=int, default=16,
                        help="evaluate on at most this many prompts of each task, of the eval prompts and of the "
                             "held-out traffic")
    parser.add_argument("--eval-max-new-tokens", type=int, default=128, help="tokens per prompt when evaluating")
    parser.add_argument("--num-draft-tokens", type=int, default=3, help="draft length k for evaluation (the server's default)")
    parser.add_argument("--draft-weight-format", dest="export_format", default="int8", choices=("int8", "fp16", "fp32"),
                        help="weight format of the draft IR exported")
    add_alias(parser, "--export-format", "--draft-weight-format", dest="export_format", choices=("int8", "fp16", "fp32"))
    parser.add_argument("--precision", default=None, help="OpenVINO precision hint for evaluation (f32 in tests)")
    parser.add_argument("--publish", type=Path, default=None, help="folder the server loads the draft from")
    parser.add_argument("--compare-by", choices=("mean_accepted_length", "wall_clock_speedup"),
                        default="mean_accepted_length", help="figure that decides whether the new draft is better")
    parser.add_argument("--max-task-regression", type=float, default=0.02,
                        help="refuse to publish when any task's acceptance (alpha) falls by more than this")
    parser.add_argument("--force", action="store_true", help="publish even if not better than the published draft")
    parser.add_argument("--server-url", default=None, help="after publishing, POST {url}/admin/reload")
    parser.add_argument("--server-api-key", default=os.environ.get("FASTDRAFT_API_KEY"),
                        help="bearer token for --server-url (default: $FASTDRAFT_API_KEY)")
    parser.add_argument("--skip-eval", action="store_true", help="do not evaluate (publishing then needs --force)")
    trainer.add_train_args(parser, steps=200, lr=3e-4, batch_size=8, seq_len=512)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers import AutoTokenizer

    from models.resolve import resolve_model
    from training.draft_folder import load_draft, save_draft

    if not args.data and args.from_traffic is None:
        raise SystemExit("give --data (generations JSONL from training.generate) and/or --from-traffic (a capture folder)")
    if not 0 <= args.kd_weight <= 1:
        raise SystemExit(f"--kd-weight must be between 0 and 1, got {args.kd_weight}")
    if not 0 <= args.held_out_fraction < 1:
        raise SystemExit(f"--held-out-fraction must be in [0, 1), got {args.held_out_fraction}")
    rank, _ = trainer.setup_distributed(trainer.resolve_device(args.device))  # nccl on GPUs, as train() would
    # 1. vocabulary and capture checks, before anything else
    target = resolve_model(args.target, weight_format=args.target_format)
    args.draft = trainable_draft(args.draft, args.out)
    check_vocabulary(target, args.draft)
    target_vocab = json.loads((Path(target.ir_dir) / "config.json").read_text())["vocab_size"]
    split = frozen_traffic_split(args, target, target_vocab) if args.from_traffic is not None else None
    if split is not None:
        print(f"traffic: {split.describe()}")
    eval_path = args.eval_prompts or (args.data[0].parent / "prompts-eval.jsonl" if args.data else None)
    eval_prompts = read_jsonl(eval_path) if eval_path is not None and eval_path.exists() else []
    # 2. fine-tune on the target's outputs
    model, vocab = load_draft(args.draft)
    tokenizer = AutoTokenizer.from_pretrained(args.draft)
    input_table = vocab.input_table() if vocab else None
    label_table = vocab.label_table() if vocab else None
    examples = []
    if args.data:
        records, where = load_data(args.data, {p["id"] for p in eval_prompts})
        examples += tokenize_records(records, tokenizer, args.seq_len, label_table, where, input_table=input_table)
    generation_examples = len(examples)
    if split is not None:
        from training.traffic import to_examples

        examples += to_examples(split.train, args.seq_len, label_table, input_table)
    if not examples:
        raise SystemExit(f"no training examples in {', '.join(map(str, (args.data or []) + [args.from_traffic]))}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    if input_table is not None:
        pad_id = int(input_table[pad_id])  # padding is never a label; any row the draft reads will do
    config = {"command": "training.align", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "target": target.name, "target_revision": target.revision, "examples": len(examples),
              "generation_examples": generation_examples, "traffic_examples": len(examples) - generation_examples,
              "output_tokens": int(sum((example[1] != -100).sum() for example in examples)),
              "eval_prompts": len(eval_prompts), "held_out_traffic": len(split.held_out) if split else 0}
    config["args"].pop("server_api_key", None)
    log.info("config: %s", json.dumps(config, default=str))
    hf_out, ir_out = args.out / "hf", args.out / "ir"
    result = trainer.train(model, batch_fn(examples, args, pad_id), args, config,
                           on_finish=lambda m: save_draft(m, hf_out, args.draft, vocab, provenance=config))
    if not result["finished"] or rank != 0:
        return 0
    # held-out traffic: top-1 agreement with the target, before and after (seconds: the draft alone, no engine)
    agreement_report = None
    if split is not None and split.held_out:
        from training.agreement import agreement
        from training.traffic import task_of

        held = [dict(record, task=task_of(record)) for record in split.held_out]
        start, _ = load_draft(args.draft)
        agreement_report = {"before": agreement(start.eval(), vocab, tokenizer, held, args.seq_len),
                            "after": agreement(model.eval(), vocab, tokenizer, held, args.seq_len)}
        for when, counts in agreement_report.items():
            print(f"held-out traffic top-1 agreement {when:>6}: " + ", ".join(
                f"{task} {row['rate']}" for task, row in sorted(counts.items())))
    # 3. export
    from training.export import export_draft

    export_draft(hf_out, ir_out, args.export_format)
    # 4. evaluate new vs published, per task
    summary = {"data": {key: config[key] for key in ("examples", "generation_examples", "traffic_examples",
                                                      "output_tokens", "held_out_traffic")},
               "final_loss": result["loss"], "held_out_agreement": agreement_report, "new": None, "published": None}
    if split is not None:
        summary["data"]["traffic"] = split.describe()
        summary["data"]["torn_lines"] = split.report.torn[:20]
    prompts = first_per_task(eval_prompts, args.eval_limit)
    if split is not None:
        from training.traffic import as_prompts

        prompts += first_per_task(as_prompts(split.held_out), args.eval_limit)
    if not args.skip_eval and prompts:
        from training.evaluate import evaluate

        def measure(draft_dir: Path) -> dict:
            figures = evaluate(target, resolve_model(str(draft_dir)), prompts, args.num_draft_tokens,
                               args.eval_max_new_tokens, args.precision,
                               plain=args.compare_by == "wall_clock_speedup")
            return {"overall": figures["overall"], "tasks": figures["tasks"]}

        summary["new"] = measure(ir_out)
        if args.publish is not None and (args.publish / "openvino_model.xml").exists():
            summary["published"] = measure(args.publish)
        print_comparison(summary)
    # 5. publish if better (or forced), then ask the server to reload
    decision = decide(summary, args)
    summary["decision"] = decision
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "align_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"decision: {decision['action']}: {decision['reason']}")
    if decision["action"] != "publish":
        return 0
    from training.publish import publish, request_reload

    publish(ir_out, args.publish)
    print(f"published {ir_out} -> {args.publish}")
    if args.server_url:
        try:
            print("server reload:", json.dumps(request_reload(args.server_url, args.publish, api_key=args.server_api_key)))
        except OSError as error:
            log.error("published, but the reload request to %s failed: %s", args.server_url, error)
            return 3
    return 0


def decide(summary: dict, args) -> dict:
    """Publish only what measures better overall and forgets no task (beyond --max-task-regression)."""
    if args.publish is None:
        return {"action": "keep", "reason": "no --publish folder"}
    new, old = summary["new"], summary["published"]
    if args.force:
        return {"action": "publish", "reason": "--force"}
    if new is None:
        return {"action": "keep", "reason": "not evaluated (use --force to publish anyway)"}
    if old is None:
        return {"action": "publish", "reason": f"nothing published at {args.publish} yet"}
    gained = new["overall"][args.compare_by] - old["overall"][args.compare_by]
    if gained <= 0:
        return {"action": "keep", "reason": f"{args.compare_by} {new['overall'][args.compare_by]} is not above the "
                                            f"published draft's {old['overall'][args.compare_by]}"}
    for task, figures in new["tasks"].items():
        before = old["tasks"].get(task)
        if before is not None and figures["alpha"] < before["alpha"] - args.max_task_regression:
            return {"action": "keep", "reason": f"task {task}: alpha {figures['alpha']} fell from {before['alpha']} "
                                                f"(more than --max-task-regression {args.max_task_regression})"}
    return {"action": "publish", "reason": f"{args.compare_by} +{gained:.4f} overall, no task worse by more than "
                                           f"{args.max_task_regression} alpha"}


def print_comparison(summary: dict) -> None:
    new, old = summary["new"], summary["published"]
    print(f"{'task':<16}{'prompts':>8}{'alpha before':>14}{'alpha after':>13}{'accepted length before':>24}{'after':>7}")
    for task in sorted(new["tasks"]) + ["overall"]:
        after = new["overall"] if task == "overall" else new["tasks"][task]
        before = (old["overall"] if task == "overall" else old["tasks"].get(task)) if old else None
        print(f"{task:<16}{after['prompts']:>8}{before['alpha'] if before else float('nan'):>14.3f}{after['alpha']:>13.3f}"
              f"{before['mean_accepted_length'] if before else float('nan'):>24.2f}{after['mean_accepted_length']:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
