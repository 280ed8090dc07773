"""Measure a draft against its target with our engine: acceptance per position, alpha, tau, speedups, per task.

    python -m training.evaluate --target qwen2.5-coder-1.5b-instruct --draft runs/align/ir \
        --prompts runs/kd-data/prompts-eval.jsonl --num-draft-tokens 3 --max-new-tokens 128 --out runs/eval

For each prompt (JSONL: {"id", "task", "prompt"} or {"id", "task", "messages"}, e.g. the held-out
prompts-eval.jsonl of training.generate), greedy, the engine decodes twice: plainly (the baseline) and
speculatively with the draft. Per task (code, chat, summarization, ...) and overall it reports the
per-position acceptance counts and rates, alpha, tau(k), mean accepted length (bonus token counted), the
memory-bound speedup MBSU = tau / (1 + k * M_draft / M_target) with M = bytes of IR weights read per step
(the weights minus an untied input embedding, of which a step gathers a few rows), the measured wall-clock speedup (plain time / speculative time), and whether the speculative
output equals the plain one token for token (it must, greedy). Definitions: drafting/stats.py and
docs/formulas.md. Writes `<out>/evaluation.json` and `<out>/evaluation.png` (acceptance per position;
predicted MBSU vs k from alpha, with the measured points).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from fastdraft.deprecated_flags import add_alias

log = logging.getLogger("training.evaluate")


BYTES_PER_WEIGHT = {"int4": 1.0, "int8": 1.0, "fp16": 2.0, "fp32": 4.0}  # int4 IRs keep embeddings in int8


def weight_bytes(ir_dir: str | Path) -> int:
    return (Path(ir_dir) / "openvino_model.bin").stat().st_size


def bytes_read_per_step(ir_dir: str | Path) -> int:
    """Weight bytes one decoding step reads: the IR's weights minus an UNTIED input embedding table, of which
    a step gathers only a few rows (a tied one is read whole as the output layer). Estimated from config.json."""
    from models.revision import detect_weight_format

    ir_dir = Path(ir_dir)
    total = weight_bytes(ir_dir)
    config_path = ir_dir / "config.json"
    if not config_path.exists():
        return total
    config = json.loads(config_path.read_text())
    if config.get("tie_word_embeddings", True) or "hidden_size" not in config:
        return total
    per_weight = BYTES_PER_WEIGHT.get(detect_weight_format(ir_dir / "openvino_model.xml"), 1.0)
    return max(1, int(total - config["vocab_size"] * config["hidden_size"] * per_weight))


def tau_for(alpha: float, k: int) -> float:
    return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def mbsu(alpha: float, k: int, draft_bytes: int, target_bytes: int) -> float:
    """Memory-bound speedup: tau / (1 + k * M_draft / M_target)."""
    return tau_for(alpha, k) / (1.0 + k * draft_bytes / target_bytes)


def summarize(stats, k: int, plain_s: float, spec_s: float, draft_bytes: int, target_bytes: int,
              identical: int, prompts: int) -> dict:
    """One task's figures from merged GenerationStats and the two wall times."""
    alpha = stats.alpha
    return {
        "prompts": prompts, "generated_tokens": stats.generated_tokens,
        "accepted_per_position": list(stats.accepted_per_position),
        "reached_per_position": list(stats.reached_per_position),
        "acceptance_per_position": [round(x, 4) for x in stats.acceptance_per_position],
        "alpha": round(alpha, 4), "tau": round(tau_for(alpha, k), 4),
        "mean_accepted_length": round(stats.mean_accepted_length, 4),
        "draft_acceptance_ratio": round(stats.draft_acceptance_ratio, 4),
        "memory_bound_speedup": round(mbsu(alpha, k, draft_bytes, target_bytes), 4),
        "plain_s": round(plain_s, 3), "speculative_s": round(spec_s, 3),
        "wall_clock_speedup": round(plain_s / spec_s, 4) if spec_s > 0 else None,
        "identical_outputs": identical,
    }


def evaluate(target, draft, prompts: list[dict], k: int = 5, max_new_tokens: int = 128,
             precision: str | None = None, tokenizer=None, plain: bool = True) -> dict:
    """Run plain and speculative greedy decoding on every prompt; figures per task and overall.

    A prompt is text (`prompt` or `messages`) or token ids (`prompt_ids`, e.g. held-out captured traffic).
    `plain=False` skips the plain pass when only acceptance is wanted and queues every prompt at once, so the
    engine batches them (a few times faster on a CPU): wall times, speedup and identical outputs are then None.
    Greedy at a fixed k, what a sequence accepts does not depend on its neighbours in the batch, except where
    the batch's shape changes the target's rounding at a near-tie (docs/benchmarks.md, exactness).
    """
    from transformers import AutoTokenizer

    from drafting.loader import load_engine
    from drafting.request import GenerationRequest
    from drafting.stats import GenerationStats
    from training.generate import format_prompt

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(target.tokenizer_dir)
    engine = load_engine(target, draft, num_draft_tokens=k, precision=precision)
    draft_bytes, target_bytes = bytes_read_per_step(draft.ir_dir), bytes_read_per_step(target.ir_dir)
    per_task: dict[str, dict] = {}

    def prompt_ids(record: dict) -> list[int]:
        return record["prompt_ids"] if "prompt_ids" in record else \
            tokenizer(format_prompt(record, tokenizer), add_special_tokens=False)["input_ids"]

    def add(record: dict, spec, plain_s: float, spec_s: float, identical: bool) -> None:
        task = per_task.setdefault(record.get("task", "chat"), {"stats": GenerationStats(), "plain_s": 0.0,
                                                                 "spec_s": 0.0, "identical": 0, "prompts": 0})
        task["stats"].merge(spec.stats)
        task["plain_s"] += plain_s
        task["spec_s"] += spec_s
        task["identical"] += int(identical)
        task["prompts"] += 1

    if plain:  # one prompt at a time, plain then speculative: the two wall times are comparable
        for record in tqdm(prompts, desc="evaluate", unit="prompt"):
            common = dict(prompt_ids=prompt_ids(record), max_new_tokens=max_new_tokens,
                          stop_token_ids=engine.eos_token_ids)
            started = time.perf_counter()
            baseline = engine.generate_all(GenerationRequest(speculative=False, **common))
            plain_s = time.perf_counter() - started
            started = time.perf_counter()
            spec = engine.generate_all(GenerationRequest(speculative=True, num_draft_tokens=k, **common))
            add(record, spec, plain_s, time.perf_counter() - started, baseline.token_ids == spec.token_ids)
    else:  # acceptance only: every prompt queued at once and batched by the engine, at a fixed k
        generations = [engine.start(GenerationRequest(prompt_ids=prompt_ids(record), max_new_tokens=max_new_tokens,
                                                      stop_token_ids=engine.eos_token_ids, speculative=True,
                                                      num_draft_tokens=k)) for record in prompts]
        for record, generation in zip(prompts, tqdm(generations, desc="evaluate", unit="prompt")):
            add(record, generation.result(), 0.0, 0.0, False)
    overall = {"stats": GenerationStats(), "plain_s": 0.0, "spec_s": 0.0, "identical": 0, "prompts": 0}
    for task in per_task.values():
        overall["stats"].merge(task["stats"])
        for key in ("plain_s", "spec_s", "identical", "prompts"):
            overall[key] += task[key]

    def figures(t):
        result = summarize(t["stats"], k, t["plain_s"], t["spec_s"], draft_bytes, target_bytes, t["identical"], t["prompts"])
        if not plain:
            result.update(plain_s=None, speculative_s=None, wall_clock_speedup=None, identical_outputs=None)
        return result

    return {"target": display_name(target), "target_revision": target.revision, "draft": display_name(draft),
            "target_dir": str(target.ir_dir), "draft_dir": str(draft.ir_dir),
            "draft_revision": draft.revision, "num_draft_tokens": k, "max_new_tokens": max_new_tokens,
            "draft_weight_bytes": draft_bytes, "target_weight_bytes": target_bytes,  # read per step (see above)
            "draft_file_bytes": weight_bytes(draft.ir_dir), "target_file_bytes": weight_bytes(target.ir_dir),
            "tasks": {name: figures(t) for name, t in sorted(per_task.items())}, "overall": figures(overall)}


def display_name(model) -> str:
    """The model's name, or its run folder's name for a bare `.../<run>/ir` folder."""
    path = Path(model.ir_dir)
    return path.parent.name if model.name == path.name and path.name in ("ir", "hf") else model.name


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ratio = result["draft_weight_bytes"] / result["target_weight_bytes"]
    ks = list(range(1, 11))
    for name, figs in list(result["tasks"].items()) + [("overall", result["overall"])]:
        rates = figs["acceptance_per_position"]
        left.plot(range(1, len(rates) + 1), rates, marker="o", label=name)
        right.plot(ks, [tau_for(figs["alpha"], k) / (1 + k * ratio) for k in ks], label=f"{name} MBSU")
        if figs["wall_clock_speedup"]:
            right.scatter([result["num_draft_tokens"]], [figs["wall_clock_speedup"]], marker="x")
    left.set_xticks(range(1, result["num_draft_tokens"] + 1))
    left.set(xlabel="draft position", ylabel="acceptance rate", ylim=(0, 1.05),
             title=f"{result['draft']} -> {result['target']}")
    right.axhline(1.0, color="gray", linewidth=0.5)
    right.set(xlabel="draft length k", ylabel="speedup", title="MBSU vs k (lines), measured wall clock (x)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def resolve(spec: str, weight_format: str):
    from models.resolve import resolve_model

    return resolve_model(spec, weight_format=weight_format)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="target model: catalog name, IR folder or HF folder")
    parser.add_argument("--draft", required=True, help="draft model: catalog name, IR folder or HF folder")
    parser.add_argument("--prompts", required=True, type=Path, help="prompt JSONL ({id, task, prompt|messages})")
    parser.add_argument("--out", required=True, type=Path, help="folder for evaluation.json and evaluation.png")
    parser.add_argument("--num-draft-tokens", type=int, default=3, help="draft length k (the server's default)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated per prompt")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many prompts")
    parser.add_argument("--target-weight-format", default="int8", help="weight format to resolve the target with")
    parser.add_argument("--draft-weight-format", default="int8", help="weight format to resolve the draft with")
    add_alias(parser, "--target-format", "--target-weight-format", dest="target_weight_format")
    add_alias(parser, "--draft-format", "--draft-weight-format", dest="draft_weight_format")
    parser.add_argument("--precision", default=None, help="OpenVINO inference precision hint (f32 for exactness checks)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.generate import read_jsonl

    prompts = read_jsonl(args.prompts)[: args.limit]
    if not prompts:
        raise SystemExit(f"{args.prompts}: no prompts")
    target, draft = resolve(args.target, args.target_weight_format), resolve(args.draft, args.draft_weight_format)
    log.info("config: %s", json.dumps({k: str(v) for k, v in vars(args).items()}))
    result = evaluate(target, draft, prompts, args.num_draft_tokens, args.max_new_tokens, args.precision)
    result["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "evaluation.png")
    for name, figs in list(result["tasks"].items()) + [("overall", result["overall"])]:
        log.info("%-14s alpha %.3f  tau %.2f  accepted length %.2f  MBSU %.2f  wall-clock %.2fx  per position %s",
                 name, figs["alpha"], figs["tau"], figs["mean_accepted_length"], figs["memory_bound_speedup"],
                 figs["wall_clock_speedup"] or 0.0, figs["acceptance_per_position"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
