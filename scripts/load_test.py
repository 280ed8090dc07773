"""Load test: clients on loopback at 1/2/4/8 concurrency, ours (plain, speculative) vs openvino-genai's continuous batching.

    python scripts/load_test.py                                          # default models, held-out code prompts
    python scripts/load_test.py --prompts prompts/chat-sharegpt.jsonl --task chat   # chat prompts (chat template)
    python scripts/load_test.py --target smollm2-135m-instruct --target-weight-format fp32 \
        --draft smollm2-135m-instruct --genai-draft smollm2-135m-instruct --concurrency 1,2 --max-tokens 32  # quick
    python scripts/load_test.py --url http://127.0.0.1:8000 --configs plain,spec   # a running server

Configurations (--configs):
- plain:        every request sends speculative.enabled=false (plain decoding), on our server;
- spec:         speculation as the server decides (its default: draft length chosen per step from measured costs);
- spec-kN:      a fixed draft length N (speculative.num_draft_tokens=N, adaptive=false), e.g. spec-k3;
- spec+capture: `spec` on a second server, identical but for --capture-dir (traffic capture on), to measure what
                capture costs (the two servers take turns, never loaded at once);
- genai:        openvino-genai's ContinuousBatchingPipeline on the same target IR (what OpenVINO Model Server runs),
                in this process, the level's requests added at once and stepped to the end;
- genai-draft:  the same with --genai-draft as its draft_model at num_assistant_tokens --genai-num-draft-tokens.
Every level sends the same prompts (token ids, so every configuration reads the same input), `concurrency` at once
(--requests-per-level more are queued behind them for our server). Levels run in turn, and within a level every
configuration runs back to back, with `--repeats N` in alternating order, so drift in machine load hits all alike.
Prefix caching is off on our started servers and on openvino-genai's (--prefix-caching turns it on for both), so
every request pays its prefill, whatever ran before it (a server given with --url keeps its own setting).
Throughput = generated tokens / wall time of the level; latency = request to last token; TTFT = request to first.
Exactness (greedy, on by default; --no-check-outputs skips it): before the levels, every prompt a level uses is
sent alone with plain decoding, and each of our requests under load is compared with that text: "same as alone"
counts the requests whose output equals it (speculation and batching must not change a greedy output).
Mean k and drafted (ours): the draft length chosen per decoding sequence per step, over the level
(fastdraft:spec_decode_chosen_k), and the share of those sequence-steps that drafted at all; in target: the
share of the level's wall time the engine spent in target calls (the rest: drafting, its own work, waiting).
The JSON keeps, per level, the call costs the engine had learnt by its end (fastdraft:engine_call_cost_ratio).
The CPU's model and its vector flags are printed first: where verification is compute-bound matters here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastdraft.deprecated_flags import add_alias  # noqa: E402
from server.settings import DEFAULT_DRAFT  # noqa: E402

log = logging.getLogger("load_test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/load_test.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="use this running server instead of starting one")
    parser.add_argument("--api-key", help="API key of the server given with --url")
    parser.add_argument("--model", help="model id to send (default: what /v1/models lists)")
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct", help="target model spec (started servers)")
    parser.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model spec (started servers)")
    parser.add_argument("--prompt-lookup", action="store_true", help="prompt lookup instead of a draft model")
    parser.add_argument("--target-weight-format", default="int8", help="target IR weight format")
    parser.add_argument("--draft-weight-format", default="int8", help="draft IR weight format")
    parser.add_argument("--precision", default=None, help="OpenVINO precision hint")
    parser.add_argument("--max-running", type=int, default=8, help="server's concurrent generations")
    parser.add_argument("--configs", default="plain,spec,genai,genai-draft",
                        help="comma-separated: plain, spec, spec-kN, genai, genai-draft")
    parser.add_argument("--genai-draft", default="qwen2.5-coder-0.5b-instruct",
                        help="openvino-genai's draft model (catalog name or IR folder)")
    parser.add_argument("--genai-num-draft-tokens", type=int, default=3,
                        help="openvino-genai's draft length (num_assistant_tokens)")
    add_alias(parser, "--genai-k", "--genai-num-draft-tokens", dest="genai_num_draft_tokens", type=int)
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts, comma-separated")
    parser.add_argument("--requests-per-level", type=int, default=0,
                        help="requests per (config, concurrency, repeat); 0: one per client, all sent at once")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every level, alternating the configurations' order")
    parser.add_argument("--time-limit-s", type=float, default=120.0, help="stop issuing requests in a level after this")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--prompts", default="prompts/heldout-qwen2.5-coder-1.5b.jsonl",
                        help="JSONL prompts ({'prompt': text} or {'messages': [...]}, as fastdraft bench reads them)")
    parser.add_argument("--task", default=None, help="only the prompts of this task (code, chat, summarization)")
    parser.add_argument("--num-prompts", type=int, default=8, help="prompts to cycle through")
    parser.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=False,
                        help="let a prompt reuse the KV blocks of the same prompt in an earlier level, on our servers "
                             "and openvino-genai's alike (default off: every request pays its prefill)")
    parser.add_argument("--check-outputs", action=argparse.BooleanOptionalAction, default=True,
                        help="compare our greedy outputs under load with each prompt's plain output alone")
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    return parser


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    start = time.perf_counter()
    first, tokens, error, pieces = None, 0, None, []
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        if response.status_code != 200:
            return {"ok": False, "status": response.status_code, "latency_s": time.perf_counter() - start}
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"]["message"]
            elif chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            else:
                pieces.extend(c.get("text") or "" for c in chunk["choices"])
                if first is None and any(pieces):
                    first = time.perf_counter() - start
    latency = time.perf_counter() - start
    return {"ok": error is None, "status": 200, "error": error, "latency_s": latency, "ttft_s": first or latency,
            "tokens": tokens, "text": "".join(pieces)}


def request_body(model: str, prompt: list[int], args, speculative: dict | None) -> dict:
    """One streamed greedy completion; speculative None leaves the server's default."""
    body = {"model": model, "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if speculative is not None:
        body["speculative"] = speculative
    return body


def speculative_options(config: str) -> dict | None:
    if config == "plain":
        return {"enabled": False}
    if config.startswith("spec-k"):
        return {"num_draft_tokens": int(config[len("spec-k"):]), "adaptive": False}
    return None  # "spec": the server's default


def requests_in_level(args, concurrency: int) -> int:
    return max(args.requests_per_level, concurrency)


async def run_level(url: str, headers: dict, model: str, prompts: list[list[int]], concurrency: int, args,
                    config: str, references: dict[int, str]) -> dict:
    """references: prompt index -> its plain output alone (empty: outputs are not checked)."""
    total = requests_in_level(args, concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    results: list[dict] = []
    started = time.perf_counter()
    deadline = started + args.time_limit_s
    options = speculative_options(config)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await one_request(client, url, request_body(model, prompts[i % len(prompts)], args, options))
            result["prompt"] = i % len(prompts)
            reference = references.get(result["prompt"])
            if result["ok"] and reference is not None:
                result["same_as_alone"] = result["text"] == reference
            results.append(result)

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=600, headers=headers, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return level_row(results, time.perf_counter() - started, concurrency)


def level_row(results: list[dict], wall: float, concurrency: int) -> dict:
    ok = [r for r in results if r["ok"]]
    checked = [r["same_as_alone"] for r in ok if "same_as_alone" in r]
    return {"concurrency": concurrency, "requests": len(results), "failed": len(results) - len(ok),
            "checked": len(checked), "same_as_alone": sum(checked),
            "outputs": [{"prompt": r["prompt"], "text": r["text"], "same_as_alone": r.get("same_as_alone")}
                        for r in ok if "text" in r],
            "tokens": sum(r["tokens"] for r in ok), "wall_s": round(wall, 3),
            "latencies_s": sorted(round(r["latency_s"], 3) for r in ok), "ttfts_s": [round(r["ttft_s"], 3) for r in ok]}


class GenaiBatching:
    """openvino-genai's ContinuousBatchingPipeline on the target IR (optionally with a draft), stepped here."""

    def __init__(self, target_ir: str, draft_ir: str | None, k: int, max_tokens: int, eos_ids: set[int],
                 prefix_caching: bool):
        import openvino_genai

        self.genai = openvino_genai
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.cache_size = 2  # GB of KV cache, as ours (--kv-cache-gb default: at most 2 GiB)
        scheduler.enable_prefix_caching = prefix_caching  # as ours (--prefix-caching)
        properties = {"draft_model": openvino_genai.draft_model(draft_ir, "CPU")} if draft_ir else {}
        self.pipe = openvino_genai.ContinuousBatchingPipeline(target_ir, scheduler, "CPU", properties)
        self.config = openvino_genai.GenerationConfig()
        self.config.max_new_tokens = max_tokens
        self.config.stop_token_ids = eos_ids
        if draft_ir:
            self.config.num_assistant_tokens = k
        self._next_id = 0

    def run_level(self, prompts: list[list[int]], concurrency: int, args) -> dict:
        import numpy as np
        import openvino as ov

        total = requests_in_level(args, concurrency)
        pending = [prompts[i % len(prompts)] for i in range(total)]
        started = time.perf_counter()
        running: dict[int, tuple[object, float, list]] = {}
        results: list[dict] = []
        while pending or running:
            while pending and len(running) < concurrency:
                self._next_id += 1
                ids = ov.Tensor(np.asarray([pending.pop(0)], dtype=np.int64))
                running[self._next_id] = (self.pipe.add_request(self._next_id, ids, self.config), time.perf_counter(), [None])
            self.pipe.step()
            now = time.perf_counter()
            for request_id, (handle, sent, first) in list(running.items()):
                if first[0] is None and handle.can_read():
                    first[0] = now - sent
                if handle.get_status() != self.genai.GenerationStatus.RUNNING:
                    tokens = len(handle.read_all()[0].generated_ids)
                    results.append({"ok": True, "latency_s": now - sent, "ttft_s": first[0] or now - sent, "tokens": tokens})
                    del running[request_id]
        return level_row(results, time.perf_counter() - started, concurrency)


# what a level's row takes from our server's counters (moved over the level, summed over repeats)
SERVER_COUNTERS = ("capture_s", "k_sum", "k_steps", "k_plain_steps", "target_s")


def scrape(url: str) -> list:
    """The samples of the server's /metrics, parsed as Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def server_counters(samples: list) -> dict[str, float]:
    """The counters a level's row reports: capture's seconds (all stages), the chosen draft lengths
    (fastdraft:spec_decode_chosen_k: one observation per decoding sequence per step, 0 when it ran plain) and the
    seconds the engine spent in target calls (fastdraft:engine_step_seconds)."""
    counters = dict.fromkeys(SERVER_COUNTERS, 0.0)
    for sample in samples:
        if sample.name == "fastdraft:capture_seconds_total":
            counters["capture_s"] += sample.value
        elif sample.name == "fastdraft:spec_decode_chosen_k_sum":
            counters["k_sum"] = sample.value
        elif sample.name == "fastdraft:spec_decode_chosen_k_count":
            counters["k_steps"] = sample.value
        elif sample.name == "fastdraft:spec_decode_chosen_k_bucket" and float(sample.labels["le"]) == 0:
            counters["k_plain_steps"] = sample.value
        elif sample.name == "fastdraft:engine_step_seconds_sum":
            counters["target_s"] = sample.value
    return counters


def learnt_cost_ratios(samples: list) -> dict[str, float]:
    """fastdraft:engine_call_cost_ratio{tokens}: what the engine has learnt a call of that many tokens costs against a
    1-token call, the prices its draft lengths were chosen against."""
    return {sample.labels["tokens"]: round(sample.value, 3) for sample in samples
            if sample.name == "fastdraft:engine_call_cost_ratio"}


def counted_level(url: str, run) -> dict:
    """A level on one of our servers, with what its counters moved by (the writer finishing capture's queue
    included) and the call costs learnt by its end."""
    before = server_counters(scrape(url))
    row = run()
    time.sleep(0.5)  # the writer thread takes the level's last records from its queue
    samples = scrape(url)
    after = server_counters(samples)
    row.update({name: round(after[name] - before[name], 4) for name in SERVER_COUNTERS})
    row["cost_ratios"] = learnt_cost_ratios(samples)
    return row


def pooled(rows: list[dict]) -> dict:
    """One (config, concurrency) over its repeats: throughput = all tokens / all wall time, pooled percentiles."""
    tokens, wall = sum(r["tokens"] for r in rows), sum(r["wall_s"] for r in rows)
    latencies = sorted(x for r in rows for x in r["latencies_s"])
    ttfts = sorted(x for r in rows for x in r["ttfts_s"])
    return {"config": rows[0]["config"], "concurrency": rows[0]["concurrency"], "repeats": len(rows),
            "requests": sum(r["requests"] for r in rows), "failed": sum(r["failed"] for r in rows),
            "checked": sum(r["checked"] for r in rows), "same_as_alone": sum(r["same_as_alone"] for r in rows),
            "tokens": tokens, "wall_s": round(wall, 3), "throughput_tok_s": round(tokens / wall, 3) if wall else 0.0,
            "latency_p50_s": round(_percentile(latencies, 50), 3), "latency_p95_s": round(_percentile(latencies, 95), 3),
            "ttft_p50_s": round(_percentile(ttfts, 50), 3),
            **({name: round(sum(r[name] for r in rows), 4) for name in SERVER_COUNTERS} if "k_steps" in rows[0] else {}),
            **({"cost_ratios": rows[-1]["cost_ratios"]} if "cost_ratios" in rows[0] else {})}


def engine_columns(row: dict) -> str:
    """Mean chosen draft length per sequence-step, the share of sequence-steps that drafted, and the share of the
    level's wall time its engine spent in target calls (ours only)."""
    if not row.get("k_steps"):
        return ""
    return (f"{row['k_sum'] / row['k_steps']:>8.2f}{1 - row['k_plain_steps'] / row['k_steps']:>9.0%}"
            f"{row['target_s'] / row['wall_s']:>11.0%}")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else values[-1]


def server_args(args) -> list[str]:
    from models.resolve import resolve_model

    target = resolve_model(args.target, weight_format=args.target_weight_format)
    out = ["--target", str(target.ir_dir), "--served-model-name", "m", "--no-pull", "--log-level", "warning",
           "--max-running", str(args.max_running), "--max-waiting", "1000"]
    if args.prompt_lookup:
        out += ["--prompt-lookup"]
    else:
        out += ["--draft", str(resolve_model(args.draft, weight_format=args.draft_weight_format).ir_dir)]
    if args.precision:
        out += ["--precision", args.precision]
    if not args.prefix_caching:  # the plain outputs alone and earlier levels would otherwise spare later ones prefill
        out += ["--no-prefix-caching"]
    return out


def main() -> int:
    args = build_parser().parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from transformers import AutoTokenizer

    from fastdraft.bench import load_prompts
    from fastdraft.machine import describe_cpu
    from models.resolve import resolve_model
    from server.launch import ServerProcess

    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {describe_cpu()}", flush=True)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    target = resolve_model(args.target, weight_format=args.target_weight_format)
    tokenizer = AutoTokenizer.from_pretrained(str(target.tokenizer_dir))
    _, prompts = load_prompts(args.prompts, args.task, args.num_prompts, tokenizer, chat=False)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    results = []

    def measure(runners: dict) -> None:
        """Levels outer, then repeats, configurations inner (order reversed every other repeat)."""
        for config, run in runners.items():  # warm-up: compile caches, first-call allocations
            run(prompts[:1], 1, argparse.Namespace(**{**vars(args), "requests_per_level": 1}))
        for concurrency in levels:
            for repeat in range(args.repeats):
                order = list(runners.items())
                for config, run in order if repeat % 2 == 0 else order[::-1]:
                    row = run(prompts, concurrency, args)
                    row.update(config=config, repeat=repeat)
                    results.append(row)
                    log.info("%s c=%d repeat %d: %.2f tok/s", config, concurrency, repeat, row["tokens"] / row["wall_s"])

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        runners: dict = {}
        references: dict[int, str] = {}  # filled before the levels run, read by our runners
        ours = [c for c in configs if c == "plain" or c.startswith("spec")]
        if ours:
            if args.url:
                url = args.url
                model = args.model or httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"]
            else:
                url, model = stack.enter_context(ServerProcess(server_args(args), Path(tmp) / "server.log")).url, "m"
            for config in ours:
                if config == "spec+capture":
                    if args.url:
                        raise SystemExit("--configs spec+capture starts its own servers: leave out --url")
                    capturing = stack.enter_context(ServerProcess(
                        server_args(args) + ["--capture-dir", str(Path(tmp) / "capture")], Path(tmp) / "capture.log"))
                    runners[config] = (lambda u: lambda p, n, a: counted_level(
                        u, lambda: asyncio.run(run_level(u, headers, model, p, n, a, "spec", references))))(capturing.url)
                    continue
                runners[config] = (lambda c: lambda p, n, a: counted_level(url, lambda: asyncio.run(
                    run_level(url, headers, model, p, n, a, c, references))))(config)
        eos = set(_eos_ids(target.ir_dir, tokenizer))
        if "genai" in configs:
            plain_pipe = GenaiBatching(str(target.ir_dir), None, args.genai_num_draft_tokens, args.max_tokens, eos,
                                     args.prefix_caching)
            runners["genai"] = plain_pipe.run_level
        if "genai-draft" in configs:
            draft = resolve_model(args.genai_draft, weight_format=args.draft_weight_format)
            draft_pipe = GenaiBatching(str(target.ir_dir), str(draft.ir_dir), args.genai_num_draft_tokens,
                                       args.max_tokens, eos, args.prefix_caching)
            runners["genai-draft"] = draft_pipe.run_level
        runners = {c: runners[c] for c in configs if c in runners}
        if ours and args.check_outputs:
            references.update(asyncio.run(outputs_alone(url, headers, model, prompts, levels, args)))
        measure(runners)

    table = [pooled([r for r in results if (r["config"], r["concurrency"]) == key])
             for key in sorted({(r["config"], r["concurrency"]) for r in results},
                               key=lambda key: (key[1], configs.index(key[0])))]
    print(f"\n{'config':<13}{'clients':>8}{'reqs':>6}{'fail':>6}{'tok/s':>9}{'x plain':>9}{'p50 s':>8}{'p95 s':>8}"
          f"{'TTFT p50':>10}{'same as alone':>15}{'mean k':>8}{'drafted':>9}{'in target':>11}")
    plain_rate = {row["concurrency"]: row["throughput_tok_s"] for row in table if row["config"] == "plain"}
    for row in table:
        ratio = row["throughput_tok_s"] / plain_rate[row["concurrency"]] if plain_rate.get(row["concurrency"]) else float("nan")
        print(f"{row['config']:<13}{row['concurrency']:>8}{row['requests']:>6}{row['failed']:>6}"
              f"{row['throughput_tok_s']:>9.2f}{ratio:>9.2f}{row['latency_p50_s']:>8.2f}{row['latency_p95_s']:>8.2f}"
              f"{row['ttft_p50_s']:>10.2f}{(str(row['same_as_alone']) + '/' + str(row['checked'])) if row['checked'] else '-':>15}"
              f"{engine_columns(row)}")
    spec_rate = {row["concurrency"]: row["throughput_tok_s"] for row in table if row["config"] == "spec"}
    for row in table:
        if row["config"] == "spec+capture" and spec_rate.get(row["concurrency"]):
            print(f"capture on / off, {row['concurrency']} clients: {row['throughput_tok_s'] / spec_rate[row['concurrency']]:.3f}"
                  f" tok/s; capture's own work {row['capture_s']:.2f} s = {row['capture_s'] / row['wall_s']:.2%} of the level's wall time")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "machine": describe_cpu(), "table": table,
                                                   "runs": results}, indent=1) + "\n")
    return 0


async def outputs_alone(url: str, headers: dict, model: str, prompts: list[list[int]], levels: list[int],
                        args) -> dict[int, str]:
    """Each prompt the levels use, sent alone with plain decoding: the greedy text every run is compared with."""
    used = min(len(prompts), max(requests_in_level(args, c) for c in levels))
    references = {}
    async with httpx.AsyncClient(timeout=600, headers=headers) as client:
        for i in range(used):
            result = await one_request(client, url, request_body(model, prompts[i], args, {"enabled": False}))
            if result["ok"]:
                references[i] = result["text"]
    log.info("plain outputs alone: %d prompts", len(references))
    return references


def _eos_ids(ir_dir, tokenizer) -> list[int]:
    """The ids that end generation for our server: the model's EOS plus the chat models' end-of-turn tokens."""
    from drafting.loader import eos_token_ids
    from server.runtime import end_of_turn_ids

    return sorted(set(eos_token_ids(ir_dir)) | set(end_of_turn_ids(tokenizer)))


if __name__ == "__main__":
    sys.exit(main())
