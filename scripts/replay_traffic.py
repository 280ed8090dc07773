"""Send a prompt file through a running server, as users would, e.g. to fill a traffic capture for a refresh.

    python scripts/replay_traffic.py --url http://127.0.0.1:8000 --prompts runs/replay/chat.jsonl \
        --concurrency 8 --max-tokens 128 [--api-key KEY] [--temperature 0] [--interleave]

Prompt file: JSONL, one request per line: {"id", "task", "messages": [...]} goes to /v1/chat/completions,
{"id", "task", "prompt": "..."} to /v1/completions (the shapes of prompts/*.jsonl). Each request carries
`metadata: {"task": <task>, "prompt_id": <id>}`, which a capture stores, so the refresh can report per task.
Requests go through the official `openai` client, `--concurrency` at a time; a failed request is reported
and counted (the exit status is 1 if any failed). Prints, per task and in all: requests, completion tokens,
wall time and tokens/s, and the server's mean accepted length.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import sys
import time
from pathlib import Path


def read_prompts(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path}: line {number}: not JSON ({error.msg})") from None
        if not isinstance(row.get("messages"), list) and not isinstance(row.get("prompt"), str):
            raise SystemExit(f"{path}: line {number}: needs 'messages' (chat) or 'prompt' (completion)")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no prompts")
    return rows


async def replay(args: argparse.Namespace, rows: list[dict]) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key or "none",
                                max_retries=0, timeout=args.timeout)
    model = args.model or (await client.models.list()).data[0].id
    gate = asyncio.Semaphore(args.concurrency)
    tally: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    async def one(row: dict) -> None:
        task = str(row.get("task", "unknown"))
        metadata = {"task": task, "prompt_id": str(row.get("id", ""))[:512]}
        common = dict(model=model, max_tokens=args.max_tokens, temperature=args.temperature)
        async with gate:
            try:
                if "messages" in row:
                    result = await client.chat.completions.create(messages=row["messages"], metadata=metadata, **common)
                else:  # the client's completions.create has no `metadata` argument; the server accepts it
                    result = await client.completions.create(prompt=row["prompt"], extra_body={"metadata": metadata},
                                                             **common)
            except openai.APIError as error:
                tally[task]["failed"] += 1
                print(f"{row.get('id')}: {type(error).__name__}: {error}", file=sys.stderr)
                return
        speculative = (result.usage.model_extra or {}).get("speculative") or {}
        counts = tally[task]
        counts["requests"] += 1
        counts["completion_tokens"] += result.usage.completion_tokens
        counts["drafts"] += speculative.get("drafts", 0)
        counts["accepted_tokens"] += speculative.get("accepted_tokens", 0)

    started = time.perf_counter()
    await asyncio.gather(*(one(row) for row in rows))
    return {"wall_s": time.perf_counter() - started, "tally": tally}


def report(result: dict) -> int:
    wall, tally = result["wall_s"], result["tally"]
    total = collections.Counter()
    for counts in tally.values():
        total.update(counts)
    print(f"{'task':<16}{'requests':>9}{'failed':>7}{'tokens':>8}{'tok/s':>8}{'mean accepted':>15}")
    for task, counts in sorted(tally.items()) + [("all", total)]:
        tokens_per_s = counts["completion_tokens"] / wall if task == "all" else float("nan")
        drafts = counts["drafts"]
        # tokens emitted per verifying step = accepted / drafts + 1 (docs/formulas.md)
        tau = f"{counts['accepted_tokens'] / drafts + 1:.2f}" if drafts else "-"
        shown = f"{tokens_per_s:.2f}" if task == "all" else ""
        print(f"{task:<16}{counts['requests']:>9}{counts['failed']:>7}{counts['completion_tokens']:>8}{shown:>8}{tau:>15}")
    print(f"wall {wall:.1f} s")
    return 1 if total["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--prompts", required=True, type=Path, action="append", help="prompt JSONL (repeatable)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--limit", type=int, default=None, help="send at most this many prompts of each file")
    parser.add_argument("--interleave", action="store_true",
                        help="send the files' prompts in the order of a hash of their ids instead of file by file, "
                             "so every task is spread over the capture's time (a refresh holds out the newest slice)")
    parser.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    parser.add_argument("--api-key", default=None, help="bearer token, when the server has --api-key")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per request")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error(f"--concurrency must be >= 1, got {args.concurrency}")
    rows = [row for path in args.prompts for row in read_prompts(path)[: args.limit]]
    if args.interleave:
        # salted: the prompt builders select by sha256(id) itself, so each file's ids sit in one band of it
        rows.sort(key=lambda row: hashlib.sha256(b"replay-order:" + str(row.get("id", "")).encode()).hexdigest())
    return report(asyncio.run(replay(args, rows)))


if __name__ == "__main__":
    sys.exit(main())
