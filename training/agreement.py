"""Teacher-forced agreement: how often a draft's top-1 token is the target's next token in the target's own text.

    python -m training.agreement --data runs/heldout/generations.jsonl --draft runs/a/hf --draft runs/b/hf \
        [--task code] [--limit 24] [--json out.json]

    python -m training.agreement --from-traffic runs/capture --split runs/refresh/traffic_split.json --draft ...

The data is the target's greedy generations (training.generate's generations.jsonl: prompt, output; or
captured traffic, fastdraft/traffic.py, as token ids: with --split, only a refresh's held-out records), so
at every output position the draft's argmax either is the token the target produced there or is not:
the acceptance of a one-token greedy draft after a correct prefix. It needs no target at evaluation time
and runs a draft over a few thousand tokens in seconds on a CPU, so candidate drafts (stages, data mixes,
sizes) can be ranked minutes after training instead of after an engine benchmark. It is an upper proxy:
the engine's alpha (training.evaluate, fastdraft bench) is lower, because speculative steps start right
after a rejection, where hard tokens cluster (measured here: agreement 0.73 vs alpha 0.67 at k=3 for the
shipped draft on held-out HumanEval). Tokens outside a reduced draft vocabulary count as misses (the
draft can never propose them) and are reported separately.

Tokenization follows training.align: prompt and output are encoded separately (the target generated the
output ids after the prompt ids), prompts left-truncated to --max-len tokens.

Boundary: torch forward passes of HF draft folders over JSONL records; no engine, no OpenVINO.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger("training.agreement")


def next_token_predictions(model, vocab, ids: np.ndarray) -> np.ndarray:
    """[len(ids)] target ids: the draft's argmax after each prefix of `ids` (target ids)."""
    import torch

    inputs = ids if vocab is None or vocab.input_table() is None else vocab.input_table()[ids]
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(np.asarray(inputs, dtype=np.int64))[None]).logits[0].float()
    if vocab is None:
        return logits.argmax(-1).numpy()
    rows = logits[:, : vocab.draft_vocab_size]  # an input-reduced draft's unknown row is never proposed
    return vocab.to_target(rows.argmax(-1).numpy())


def agreement(model, vocab, tokenizer, records: list[dict], max_len: int = 1024) -> dict[str, dict]:
    """Per task and "all": output tokens, agreeing tokens, tokens outside the draft vocabulary, and the rate."""
    kept = None if vocab is None else vocab.label_table() >= 0  # target ids the draft can propose
    counts: dict[str, dict] = defaultdict(lambda: {"tokens": 0, "agree": 0, "outside_vocab": 0})
    for record in records:
        if "output_ids" in record:  # captured traffic: the ids the target read and wrote
            prompt, output = list(record["prompt_ids"]), list(record["output_ids"])[:max_len - 1]
        else:
            prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
            output = tokenizer(record["output"], add_special_tokens=False)["input_ids"][:max_len - 1]
        if not output or not prompt:
            continue
        prompt = prompt[-(max_len - len(output)):]
        ids = np.asarray(prompt + output, dtype=np.int64)
        predicted = next_token_predictions(model, vocab, ids[:-1])[len(prompt) - 1:]
        actual = ids[len(prompt):]
        for task in (record.get("task") or "other", "all"):
            counts[task]["tokens"] += len(actual)
            counts[task]["agree"] += int((predicted == actual).sum())
            counts[task]["outside_vocab"] += 0 if kept is None else int((~kept[actual]).sum())
    for row in counts.values():
        row["rate"] = round(row["agree"] / row["tokens"], 4) if row["tokens"] else None
    return dict(counts)


def traffic_records(folder: Path, split: Path | None) -> list[dict]:
    """Captured records (with their task), all of them or the held-out ids of a refresh's split."""
    from fastdraft import traffic
    from training.traffic import task_of

    held_out = set(json.loads(split.read_text())["held_out"]) if split is not None else None
    return [dict(record, task=task_of(record)) for _, _, record in traffic.read_records(folder)
            if held_out is None or record["id"] in held_out]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", type=Path, default=[],
                        help="target generations (JSONL with prompt and output), repeatable")
    parser.add_argument("--from-traffic", type=Path, default=None, help="a capture folder (serve --capture-dir)")
    parser.add_argument("--split", type=Path, default=None,
                        help="with --from-traffic: a refresh's traffic_split.json; only its held-out records are used")
    parser.add_argument("--draft", action="append", type=Path, required=True, help="draft HF folder, repeatable")
    parser.add_argument("--task", default=None, help="only records of this task")
    parser.add_argument("--limit", type=int, default=None, help="at most this many records (after --task)")
    parser.add_argument("--max-len", type=int, default=1024, help="prompt + output tokens per record")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the counts per draft and task here")
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import AutoTokenizer

    from training.align import load_data
    from training.draft_folder import load_draft

    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data and args.from_traffic is None:
        raise SystemExit("give --data (target generations) and/or --from-traffic (a capture folder)")
    records, where = load_data(args.data, set())
    for record, place in zip(records, where):
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("output"), str):
            raise SystemExit(f"{place}: needs string fields 'prompt' and 'output'")
    if args.from_traffic is not None:
        records += traffic_records(args.from_traffic, args.split)
    records = [r for r in records if args.task is None or r.get("task") == args.task][:args.limit]
    if not records:
        raise SystemExit(f"no records{f' with task {args.task!r}' if args.task else ''} in {', '.join(map(str, args.data))}")
    results = {}
    for folder in args.draft:
        model, vocab = load_draft(folder)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        results[str(folder)] = counts = agreement(model, vocab, tokenizer, records, args.max_len)
        tasks = ", ".join(f"{task} {row['rate']:.3f} ({row['tokens']} tokens, {row['outside_vocab']} outside the "
                          f"draft vocabulary)" for task, row in sorted(counts.items()))
        print(f"{folder}: top-1 agreement {tasks}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
