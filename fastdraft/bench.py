"""`fastdraft bench`: our engine vs openvino-genai, plain and speculative, side by side in one process.

    fastdraft bench --target qwen2.5-coder-1.5b-instruct --draft qwen2.5-coder-0.5b-instruct \
        --prompts prompts/humaneval.jsonl --num-prompts 10 --max-tokens 128 --json bench.json

All configurations run on the same IR folders and the same token ids, greedy, after a warm-up, each from
cold caches (no prefix reuse: every run pays its own prefill; openvino-genai's prefix caching, on by
default, is turned off), and interleaved prompt by prompt (each prompt runs every configuration before
the next prompt, in an order rotated by one per prompt), so drift in machine load hits all of them
alike; `--rounds R` repeats the whole set. Reported: tokens/s (generated tokens / wall time, prefill
included), the ratio to our plain decoding, the median and range of that ratio taken prompt by prompt
(each configuration against our plain decoding of the same prompt, run within the same minute: less
exposed to the machine's drift than the totals), acceptance, and how many outputs equal our plain
greedy output token for token (the JSON also gives, per run, the first position where an output differs).

Our speculative configurations run at each --num-draft-tokens k and adaptive (--no-adaptive: the fixed ones
only), with the proposer `fastdraft serve` builds from the same flags: a draft plus prompt lookup by default
(named `ours+lookup`), --no-draft-with-lookup the draft alone, --compare-lookup both side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from fastdraft.deprecated_flags import add_alias
from fastdraft.generate_cmd import SERVER, add_model_arguments, check_draft_length, finish_model_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmark plain vs speculative, ours vs openvino-genai",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--prompts", required=True,
                        help="JSONL file: {'prompt': text} (fed raw) or {'messages': [...]} (chat template) per line")
    parser.add_argument("--task", default=None, help="only the lines whose 'task' field is this (e.g. code)")
    parser.add_argument("--num-prompts", type=int, default=10, help="first N prompts of the file")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per prompt")
    parser.add_argument("--rounds", type=int, default=1, help="run the whole prompt set this many times")
    k = SERVER["num_draft_tokens"]
    parser.add_argument("--num-draft-tokens", type=draft_lengths, default=[k], metavar="K[,K...]",
                        help=f"fixed draft lengths of our engine's configurations, comma-separated (default {k})")
    add_alias(parser, "--ks", "--num-draft-tokens", dest="num_draft_tokens", type=draft_lengths)
    parser.add_argument("--genai-num-draft-tokens", type=draft_lengths, default=[k], metavar="K[,K...]",
                        help=f"draft lengths (num_assistant_tokens) for openvino-genai, comma-separated (default {k})")
    add_alias(parser, "--genai-ks", "--genai-num-draft-tokens", dest="genai_num_draft_tokens", type=draft_lengths)
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=SERVER["adaptive"],
                        help="also our adaptive configuration, the draft length chosen per step (default: on)")
    parser.add_argument("--no-genai", action="store_true", help="skip openvino-genai configurations")
    parser.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    parser.add_argument("--compare-draft", action="append", default=[], metavar="DRAFT",
                        help="another draft for our engine on the same target, measured in the same run at "
                             "--num-draft-tokens and adaptive (repeatable; e.g. the shipped draft vs the "
                             "off-the-shelf 0.5B)")
    parser.add_argument("--compare-lookup", action="store_true",
                        help="run each draft (--draft and every --compare-draft) both alone and with prompt lookup "
                             "(drafting/draft_with_lookup.py, copies up to --copy-tokens), whatever "
                             "--draft-with-lookup says")
    add_alias(parser, "--with-lookup", "--compare-lookup", dest="compare_lookup", nargs=0, const=True)
    parser.add_argument("--json", dest="json_out", help="write all measurements to this JSON file")
    parser.set_defaults(func=run, finish=lambda args: finish(parser, args))


def draft_lengths(text: str) -> list[int]:
    """'3,5,7' -> [3, 5, 7]; '' -> [] (no fixed-k configuration)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def finish(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    finish_model_arguments(parser, args)
    for flag, ks in (("--num-draft-tokens", args.num_draft_tokens), ("--genai-num-draft-tokens", args.genai_num_draft_tokens)):
        for k in ks:
            check_draft_length(parser, flag, k)


@dataclass
class Tally:
    name: str
    tokens: int = 0
    seconds: float = 0.0
    exact: int = 0
    runs: int = 0
    drafts: int = 0
    accepted: int = 0
    draft_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    reached_per_position: list[int] = field(default_factory=list)
    paired_ratios: list[float] = field(default_factory=list)  # per prompt run: tok/s over ours plain's on it

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def mean_accepted_length(self) -> float | None:
        return 1 + self.accepted / self.drafts if self.drafts else None

    def add_stats(self, stats) -> None:
        self.drafts += stats.drafts
        self.accepted += stats.accepted_tokens
        self.draft_tokens += stats.draft_tokens
        for mine, theirs in ((self.accepted_per_position, stats.accepted_per_position),
                             (self.reached_per_position, stats.reached_per_position)):
            mine.extend([0] * (len(theirs) - len(mine)))
            for i, count in enumerate(theirs):
                mine[i] += count


def _ours(engine, request_kwargs):
    from drafting.request import GenerationRequest

    def run_one(prompt_ids, max_tokens):
        engine.forget_cached_prefixes()  # every configuration pays its own prefill, as genai's does
        result = engine.generate_all(GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=max_tokens,
                                                       stop_token_ids=engine.eos_token_ids, **request_kwargs))
        return result.token_ids, result.stats
    return run_one


def _genai(pipe, eos_ids, k: int | None):
    import openvino as ov
    import openvino_genai

    def run_one(prompt_ids, max_tokens):
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = max_tokens
        config.apply_chat_template = False
        config.stop_token_ids = set(eos_ids)
        if k is not None:
            config.num_assistant_tokens = k
        result = pipe.generate(ov.Tensor(np.asarray([prompt_ids], dtype=np.int64)), config)
        tokens = list(result.tokens[0])
        return tokens, None
    return run_one


def _genai_scheduler():
    """openvino-genai's default for LLMPipeline on CPU (its latency-oriented scheduler config: no batch limit),
    minus prefix caching: a prompt seen before (the warm-up's, or any with --rounds > 1) would skip its
    prefill there while ours pays it (measured: 0.15 s instead of 0.8 s to the first token after warm-up)."""
    import openvino_genai

    config = openvino_genai.SchedulerConfig()
    config.max_num_batched_tokens = 2 ** 64 - 1  # SIZE_MAX, as genai's own default sets it
    config.enable_prefix_caching = False
    return config


def build_configs(args, target, draft, engine, eos_ids) -> list[tuple[str, object]]:
    from drafting.draft_with_lookup import DraftWithLookupProposer
    from drafting.engine import Engine
    from drafting.loader import load_proposer
    from models.resolve import resolve_model

    configs = [("ours plain", _ours(engine, {"speculative": False}))]

    def speculative(name: str, spec_engine) -> None:  # the fixed draft lengths, then adaptive
        for k in args.num_draft_tokens:
            configs.append((f"{name} k={k}", _ours(spec_engine, {"num_draft_tokens": k, "adaptive": False})))
        if args.adaptive:
            configs.append((f"{name} adaptive", _ours(spec_engine, {"adaptive": True})))

    def engine_for(proposer):  # the loaded engine if it runs this proposer, else one on the same compiled target
        if proposer is engine.proposer:
            return engine
        return Engine(engine.target, proposer, engine.config, eos_token_ids=engine.eos_token_ids)

    def each_lookup(name: str, alone, combined=None) -> None:  # a draft alone and/or with prompt lookup
        for with_lookup in (False, True) if args.compare_lookup else (args.draft_with_lookup,):
            chosen = (combined or DraftWithLookupProposer(alone, copy_tokens=args.copy_tokens)) if with_lookup else alone
            speculative(name + "+lookup" * with_lookup, engine_for(chosen))

    if draft is not None:  # load_from_args combined the draft with lookup when --draft-with-lookup
        loaded = engine.proposer
        if isinstance(loaded, DraftWithLookupProposer):
            each_lookup("ours", loaded.draft, loaded)
        else:
            each_lookup("ours", loaded)
    elif args.prompt_lookup:
        speculative("ours", engine)
    for spec in args.compare_draft:  # same compiled target, another proposer
        other = resolve_model(spec, weight_format=args.draft_weight_format)
        proposer = load_proposer(other, target, precision=args.precision, target_vocab_size=engine.target.vocab_size,
                                 num_blocks=engine.target.num_blocks)
        each_lookup(other.name, proposer)
    if not args.no_genai:
        import openvino_genai

        configs.append(("genai plain", _genai(openvino_genai.LLMPipeline(str(target.ir_dir), "CPU",
                                                                         scheduler_config=_genai_scheduler()),
                                              eos_ids, None)))
        if draft is not None:
            pipe = openvino_genai.LLMPipeline(str(target.ir_dir), "CPU", scheduler_config=_genai_scheduler(),
                                              draft_model=openvino_genai.draft_model(str(draft.ir_dir), "CPU"))
            for k in args.genai_num_draft_tokens:
                configs.append((f"genai k={k}", _genai(pipe, eos_ids, k)))
    return configs


def load_prompts(path: str, task: str | None, num_prompts: int, tokenizer, chat: bool,
                 ) -> tuple[list[dict], list[list[int]]]:
    """The first num_prompts records of a JSONL prompt file (only task's, when given) and their token ids:
    {'messages': [...]} through the chat template, {'prompt': text} raw or, with chat, as one user turn."""
    from fastdraft.generate_cmd import encode_prompt

    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    prompts = [r for r in records if task is None or r.get("task") == task][:num_prompts]
    if not prompts:
        raise SystemExit(f"{path}: no prompts" + (f" with task {task!r}" if task else ""))
    prompt_ids = [list(tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True,
                                                     return_dict=False))
                  if "messages" in r else encode_prompt(tokenizer, r["prompt"], chat) for r in prompts]
    return prompts, prompt_ids


def run(args: argparse.Namespace) -> int:
    from fastdraft.generate_cmd import load_from_args
    from fastdraft.machine import describe_cpu

    if args.rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {args.rounds}")
    engine, tokenizer, target, draft = load_from_args(args)
    prompts, prompt_ids = load_prompts(args.prompts, args.task, args.num_prompts, tokenizer, args.chat)
    eos_ids = sorted(engine.eos_token_ids)
    configs = build_configs(args, target, draft, engine, eos_ids)
    print(f"# {len(configs)} configurations x {len(prompts)} prompts, {args.max_tokens} new tokens, greedy; "
          f"target {target.name} ({target.weight_format}), proposer {engine.proposer_name or 'none'}",
          file=sys.stderr)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {describe_cpu()}", file=sys.stderr)
    for name, run_one in configs:  # warm-up: compile caches, first-inference allocations
        run_one(prompt_ids[0], 16)
    tallies = {name: Tally(name) for name, _ in configs}
    records = []
    for index in range(args.rounds * len(prompt_ids)):
        ids = prompt_ids[index % len(prompt_ids)]
        runs = {}
        shift = index % len(configs)  # rotate the order prompt by prompt: no configuration always runs last
        for name, run_one in configs[shift:] + configs[:shift]:
            start = time.perf_counter()
            tokens, stats = run_one(ids, args.max_tokens)
            runs[name] = (tokens, stats, time.perf_counter() - start)
        reference, _, reference_seconds = runs["ours plain"]  # the greedy reference
        for name, _ in configs:
            tokens, stats, seconds = runs[name]
            tally = tallies[name]
            tally.paired_ratios.append(len(tokens) / seconds / (len(reference) / reference_seconds))
            tally.tokens += len(tokens)
            tally.seconds += seconds
            tally.runs += 1
            tally.exact += tokens == reference
            if stats is not None:
                tally.add_stats(stats)
            records.append({"prompt": index % len(prompt_ids), "round": index // len(prompt_ids), "config": name,
                            "tokens": len(tokens), "seconds": round(seconds, 4), "exact": tokens == reference,
                            "first_difference": first_difference(tokens, reference),
                            "stats": stats.to_dict() if stats else None})
        print(f"prompt {index + 1}/{args.rounds * len(prompt_ids)}: " + ", ".join(
            f"{t.name} {t.tokens_per_second:.2f}" for t in tallies.values()), file=sys.stderr)
    print_table(tallies)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"target": target.name, "draft": draft.name if draft else None, "max_tokens": args.max_tokens,
                       "prompts": len(prompts), "summary": [summary(t, tallies) for t in tallies.values()],
                       "runs": records}, f, indent=1)
    return 0


def first_difference(tokens: list[int], reference: list[int]) -> int | None:
    """Index of the first token where two outputs differ (the shorter one's length if one is a prefix); None if equal."""
    if tokens == reference:
        return None
    return next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), min(len(tokens), len(reference)))


def summary(tally: Tally, tallies: dict[str, Tally]) -> dict:
    base = tallies["ours plain"].tokens_per_second
    acceptance = [a / r if r else 0.0 for a, r in zip(tally.accepted_per_position, tally.reached_per_position)]
    return {"config": tally.name, "tokens_per_second": round(tally.tokens_per_second, 3),
            "ratio_to_ours_plain": round(tally.tokens_per_second / base, 3) if base else None,
            "paired_ratio_median": round(float(np.median(tally.paired_ratios)), 3) if tally.paired_ratios else None,
            "paired_ratio_range": [round(min(tally.paired_ratios), 3), round(max(tally.paired_ratios), 3)]
            if tally.paired_ratios else None,
            "mean_accepted_length": round(tally.mean_accepted_length, 3) if tally.mean_accepted_length else None,
            "alpha": round(sum(tally.accepted_per_position) / sum(tally.reached_per_position), 3)
            if sum(tally.reached_per_position) else None,
            "acceptance_per_position": [round(x, 3) for x in acceptance],
            "exact_match": f"{tally.exact}/{tally.runs}", "tokens": tally.tokens, "seconds": round(tally.seconds, 2)}


def print_table(tallies: dict[str, Tally]) -> None:
    print("| configuration | tok/s | x ours plain | per prompt: median [range] | mean accepted length | alpha "
          "| same as plain greedy |")
    print("|---|---|---|---|---|---|---|")
    for tally in tallies.values():
        row = summary(tally, tallies)
        mal = row["mean_accepted_length"]
        low, high = row["paired_ratio_range"]
        print(f"| {row['config']} | {row['tokens_per_second']:.2f} | {row['ratio_to_ours_plain']:.2f} | "
              f"{row['paired_ratio_median']:.2f} [{low:.2f}-{high:.2f}] | "
              f"{mal if mal is not None else '-'} | {row['alpha'] if row['alpha'] is not None else '-'} | "
              f"{row['exact_match']} |")
