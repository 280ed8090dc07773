"""Serving overhead: tokens/s of one streamed HTTP request vs the engine called directly, same models, side by side.

    python scripts/serving_overhead.py                                   # default target + draft, 5 prompts x 128 tokens
    python scripts/serving_overhead.py --target smollm2-135m-instruct --target-weight-format fp32 \
        --draft smollm2-135m-instruct --num-prompts 3 --max-tokens 48    # quick check

The script loads the engine in this process AND starts `python -m server` with the same models in a child process
(one running slot), then for every prompt runs both, alternating which goes first so drift in machine load hits
both alike. The same token ids go to both (the HTTP request sends the prompt as token ids), greedy, same stop ids,
so both generate the same tokens; tokens/s = generated tokens / wall time from request to last token (prefill
included). HTTP time is measured at the client: connection, JSON, SSE framing, detokenization and the event loop
all count as overhead. Only one of the two runs at any moment.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("serving_overhead")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct", help="target model spec")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b-instruct", help="draft model spec")
    parser.add_argument("--prompt-lookup", action="store_true", help="prompt lookup instead of a draft model")
    parser.add_argument("--no-draft", action="store_true", help="plain decoding")
    parser.add_argument("--target-weight-format", default="int8", help="target IR weight format")
    parser.add_argument("--draft-weight-format", default="int8", help="draft IR weight format")
    parser.add_argument("--precision", default=None, help="OpenVINO precision hint (e.g. f32)")
    parser.add_argument("--num-draft-tokens", type=int, default=5, help="draft length k")
    parser.add_argument("--prompts", default="prompts/humaneval.jsonl", help="JSONL with a 'prompt' field per line")
    parser.add_argument("--num-prompts", type=int, default=5, help="first N prompts")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the prompts")
    parser.add_argument("--json", dest="json_out", help="write the measurements to this JSON file")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from transformers import AutoTokenizer

    from drafting.loader import load_engine
    from drafting.request import GenerationRequest
    from drafting.sampling import SamplingParams
    from models.resolve import resolve_model
    from server.launch import ServerProcess
    from server.runtime import end_of_turn_ids

    mode = "none" if args.no_draft else "prompt-lookup" if args.prompt_lookup else "draft"
    target = resolve_model(args.target, weight_format=args.target_weight_format)
    draft = resolve_model(args.draft, weight_format=args.draft_weight_format) if mode == "draft" else None
    engine = load_engine(target, draft, prompt_lookup=mode == "prompt-lookup", num_draft_tokens=args.num_draft_tokens,
                         precision=args.precision, max_running=1)
    tokenizer = AutoTokenizer.from_pretrained(str(target.tokenizer_dir))
    stop_ids = frozenset(engine.eos_token_ids) | end_of_turn_ids(tokenizer)
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()[:args.num_prompts]]
    prompt_ids = [tokenizer.encode(p) for p in prompts]

    server_args = ["--target", str(target.ir_dir), "--served-model-name", "m", "--max-running", "1",
                   "--num-draft-tokens", str(args.num_draft_tokens), "--no-pull", "--log-level", "warning",
                   "--max-tokens-limit", str(max(args.max_tokens, 1))]
    server_args += {"none": ["--no-draft"], "prompt-lookup": ["--prompt-lookup"],
                    "draft": ["--draft", str(draft.ir_dir) if draft else "", "--no-draft-with-lookup"]}[mode]
    if args.precision:
        server_args += ["--precision", args.precision]

    def direct(ids: list[int]) -> tuple[int, float, float]:
        request = GenerationRequest(prompt_ids=ids, max_new_tokens=args.max_tokens, sampling=SamplingParams(),
                                    stop_token_ids=stop_ids)
        start = time.perf_counter()
        first, tokens = None, 0
        for group in engine.start(request):
            tokens += len(group.token_ids)
            if first is None and group.token_ids:
                first = time.perf_counter() - start
        return tokens, time.perf_counter() - start, first or 0.0

    def over_http(client: httpx.Client, url: str, ids: list[int]) -> tuple[int, float, float]:
        body = {"model": "m", "prompt": ids, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        first, tokens = None, 0
        with client.stream("POST", url + "/v1/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
                if first is None and chunk["choices"]:
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return tokens, time.perf_counter() - start, first or 0.0

    rows = []
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(server_args, Path(tmp) / "server.log") as server, \
            httpx.Client(timeout=600) as client:
        log.info("warm-up")
        direct(prompt_ids[0][:16])
        over_http(client, server.url, prompt_ids[0][:16])
        for round_index in range(args.rounds):
            for i, ids in enumerate(prompt_ids):
                runs = {}
                order = ("direct", "http") if (i + round_index) % 2 == 0 else ("http", "direct")
                for name in order:
                    runs[name] = direct(ids) if name == "direct" else over_http(client, server.url, ids)
                (dt, ds, df), (ht, hs, hf) = runs["direct"], runs["http"]
                if dt != ht:
                    log.warning("prompt %d: direct generated %d tokens, HTTP %d (near-tie flip?)", i, dt, ht)
                rows.append({"prompt": i, "round": round_index, "direct_tokens": dt, "direct_s": ds, "direct_ttft_s": df,
                             "http_tokens": ht, "http_s": hs, "http_ttft_s": hf})
                log.info("prompt %d: direct %.2f tok/s, HTTP %.2f tok/s", i, dt / ds, ht / hs)

    direct_tps = sum(r["direct_tokens"] for r in rows) / sum(r["direct_s"] for r in rows)
    http_tps = sum(r["http_tokens"] for r in rows) / sum(r["http_s"] for r in rows)
    per_request = [(r["http_tokens"] / r["http_s"]) / (r["direct_tokens"] / r["direct_s"]) for r in rows]
    summary = {
        "target": target.name, "proposer": engine.proposer_name, "max_tokens": args.max_tokens, "requests": len(rows),
        "direct_tokens_per_s": round(direct_tps, 3), "http_tokens_per_s": round(http_tps, 3),
        "http_over_direct": round(http_tps / direct_tps, 4),
        "http_over_direct_median_per_request": round(statistics.median(per_request), 4),
        "direct_ttft_median_s": round(statistics.median(r["direct_ttft_s"] for r in rows), 4),
        "http_ttft_median_s": round(statistics.median(r["http_ttft_s"] for r in rows), 4),
    }
    print(f"\n{'':8}{'tok/s':>10}{'TTFT p50 (s)':>14}")
    print(f"{'direct':8}{direct_tps:>10.2f}{summary['direct_ttft_median_s']:>14.3f}")
    print(f"{'HTTP':8}{http_tps:>10.2f}{summary['http_ttft_median_s']:>14.3f}")
    print(f"HTTP / direct = {summary['http_over_direct']:.3f} (median per request {summary['http_over_direct_median_per_request']:.3f}); "
          f"{'within' if summary['http_over_direct'] >= 0.95 else 'NOT within'} 5%")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
