"""Load test: asyncio clients on loopback at 1/2/4/8 concurrency, speculation on vs off; throughput and p50/p99 latency.

    python scripts/load_test.py                                          # default target + draft (slow: minutes)
    python scripts/load_test.py --target smollm2-135m-instruct --target-weight-format fp32 \
        --draft smollm2-135m-instruct --concurrency 1,2,4 --requests-per-level 4 --max-tokens 32   # quick check
    python scripts/load_test.py --url http://127.0.0.1:8000 --model qwen2.5-coder-1.5b-instruct   # a running server

Configurations (--configs):
- plain:        every request sends speculative.enabled=false (plain decoding), on the policy server;
- spec:         speculation as the server decides (its load policy: --spec-max-running here, or the server's default);
- spec-always:  a second server started with the policy off (--spec-max-running 1000): drafting at every level.
Levels run in turn, and within a level every configuration runs back to back (both servers stay up), so drift in
machine load hits all alike; with `--repeats N` each level runs N times, the order of the configurations reversed
every other time (a fixed order would hand whatever drift there is to the configuration that always runs last),
and the table pools them. `drafted` is the share of target calls that verified a draft (the policy at work).
Each level runs `--requests-per-level` streamed requests (at least one per client) with `concurrency` clients
pulling from one queue, and stops issuing new ones after `--time-limit-s`. Throughput = generated tokens / wall
time of the level; latency = request to last byte at the client; TTFT = request to first text chunk.
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
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.settings import DEFAULT_DRAFT  # noqa: E402

log = logging.getLogger("load_test")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="use this running server instead of starting one (spec-always is then skipped)")
    parser.add_argument("--api-key", help="API key of the server given with --url")
    parser.add_argument("--model", help="model id to send (default: what /v1/models lists)")
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct", help="target model spec (started servers)")
    parser.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model spec (started servers)")
    parser.add_argument("--prompt-lookup", action="store_true", help="prompt lookup instead of a draft model")
    parser.add_argument("--target-weight-format", default="int8", help="target IR weight format")
    parser.add_argument("--draft-weight-format", default="int8", help="draft IR weight format")
    parser.add_argument("--precision", default=None, help="OpenVINO precision hint")
    parser.add_argument("--num-draft-tokens", type=int, default=3, help="draft length k (the server's default)")
    parser.add_argument("--max-running", type=int, default=8, help="server's concurrent generations")
    parser.add_argument("--spec-max-running", type=int, default=None,
                        help="the policy server's load policy (default: the server's default, drafting at any load)")
    parser.add_argument("--configs", default="plain,spec,spec-always", help="comma-separated: plain, spec, spec-always")
    parser.add_argument("--concurrency", default="1,2,4,8", help="client counts, comma-separated")
    parser.add_argument("--requests-per-level", type=int, default=8, help="requests per (config, concurrency, repeat)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every level, alternating the configurations' order")
    parser.add_argument("--time-limit-s", type=float, default=120.0, help="stop issuing requests in a level after this")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--prompts", default="prompts/humaneval.jsonl", help="JSONL with a 'prompt' field per line")
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    return parser.parse_args()


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    start = time.perf_counter()
    first, tokens, error = None, 0, None
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
            elif first is None and any(c.get("text") for c in chunk["choices"]):
                first = time.perf_counter() - start
    latency = time.perf_counter() - start
    return {"ok": error is None, "status": 200, "error": error, "latency_s": latency, "ttft_s": first or latency,
            "tokens": tokens}


async def run_level(url: str, headers: dict, model: str, prompts: list[str], concurrency: int, args,
                    speculative: bool) -> dict:
    total = max(args.requests_per_level, concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    results: list[dict] = []
    started = time.perf_counter()
    deadline = started + args.time_limit_s

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"model": model, "prompt": prompts[i % len(prompts)], "max_tokens": args.max_tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            if not speculative:
                body["speculative"] = {"enabled": False}
            results.append(await one_request(client, url, body))

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=600, headers=headers, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ok = [r for r in results if r["ok"]]
    latencies = sorted(r["latency_s"] for r in ok)
    tokens = sum(r["tokens"] for r in ok)
    return {"concurrency": concurrency, "requests": len(results), "failed": len(results) - len(ok),
            "tokens": tokens, "wall_s": round(wall, 3), "latencies_s": [round(x, 3) for x in latencies],
            "ttfts_s": [round(r["ttft_s"], 3) for r in ok]}


def pooled(rows: list[dict]) -> dict:
    """One (config, concurrency) over its repeats: throughput = all tokens / all wall time, pooled percentiles."""
    tokens, wall = sum(r["tokens"] for r in rows), sum(r["wall_s"] for r in rows)
    latencies = sorted(x for r in rows for x in r["latencies_s"])
    ttfts = sorted(x for r in rows for x in r["ttfts_s"])
    steps = sum(r["target_calls"] for r in rows)
    return {"config": rows[0]["config"], "concurrency": rows[0]["concurrency"], "repeats": len(rows),
            "requests": sum(r["requests"] for r in rows), "failed": sum(r["failed"] for r in rows),
            "throughput_tok_s": round(tokens / wall, 3) if wall else 0.0,
            "latency_p50_s": round(_percentile(latencies, 50), 3), "latency_p99_s": round(_percentile(latencies, 99), 3),
            "ttft_p50_s": round(_percentile(ttfts, 50), 3),
            "drafted_steps_share": round(sum(r["drafted_calls"] for r in rows) / steps, 3) if steps else 0.0}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else values[-1]


def server_args(args, spec_max_running: int | None) -> list[str]:
    from models.resolve import resolve_model

    target = resolve_model(args.target, weight_format=args.target_weight_format)
    out = ["--target", str(target.ir_dir), "--served-model-name", "m", "--no-pull", "--log-level", "warning",
           "--max-running", str(args.max_running), "--max-waiting", "1000", "--num-draft-tokens", str(args.num_draft_tokens)]
    if args.prompt_lookup:
        out += ["--prompt-lookup"]
    else:
        out += ["--draft", str(resolve_model(args.draft, weight_format=args.draft_weight_format).ir_dir)]
    if args.precision:
        out += ["--precision", args.precision]
    if spec_max_running is not None:
        out += ["--spec-max-running", str(spec_max_running)]
    return out


def main() -> int:
    args = parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from server.launch import ServerProcess

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines()]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    results = []

    def drafted_share(url: str) -> tuple[float, float]:
        """(speculative, plain) target calls so far, from the server's /metrics."""
        calls = {"speculative": 0.0, "plain": 0.0}
        for family in text_string_to_metric_families(httpx.get(url + "/metrics", headers=headers).text):
            for sample in family.samples:
                if sample.name == "fastdraft:target_calls_total":
                    calls[sample.labels["mode"]] += sample.value
        return calls["speculative"], calls["plain"]

    def measure(servers: dict[str, tuple[str, str]]) -> None:
        """Levels outer, then repeats, configurations inner (order reversed every other repeat)."""
        for url, model in set(servers.values()):
            warm = argparse.Namespace(**{**vars(args), "requests_per_level": 1})
            asyncio.run(run_level(url, headers, model, prompts[:1], 1, warm, True))
        for concurrency in levels:
            for repeat in range(args.repeats):
                order = list(servers.items())
                for config, (url, model) in order if repeat % 2 == 0 else order[::-1]:
                    spec_before, plain_before = drafted_share(url)
                    row = asyncio.run(run_level(url, headers, model, prompts, concurrency, args, config != "plain"))
                    spec_after, plain_after = drafted_share(url)
                    row.update(config=config, repeat=repeat, drafted_calls=spec_after - spec_before,
                               target_calls=(spec_after - spec_before) + (plain_after - plain_before))
                    results.append(row)
                    log.info("%s c=%d repeat %d: %.2f tok/s", config, concurrency, repeat, row["tokens"] / row["wall_s"])

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers: dict[str, tuple[str, str]] = {}
        if args.url:
            model = args.model or httpx.get(args.url + "/v1/models", headers=headers).json()["data"][0]["id"]
            if "spec-always" in configs:
                log.warning("spec-always needs a server this script starts; skipped with --url")
            servers = {c: (args.url, model) for c in configs if c != "spec-always"}
        else:
            if {"plain", "spec"} & set(configs):
                policy = stack.enter_context(ServerProcess(server_args(args, args.spec_max_running), Path(tmp) / "policy.log"))
                servers.update({c: (policy.url, "m") for c in configs if c in ("plain", "spec")})
            if "spec-always" in configs:
                always = stack.enter_context(ServerProcess(server_args(args, 1000), Path(tmp) / "always.log"))
                servers["spec-always"] = (always.url, "m")
        servers = {c: servers[c] for c in configs if c in servers}
        measure(servers)

    table = [pooled([r for r in results if (r["config"], r["concurrency"]) == key])
             for key in sorted({(r["config"], r["concurrency"]) for r in results},
                               key=lambda key: (key[1], configs.index(key[0])))]
    print(f"\n{'config':<12}{'clients':>8}{'reqs':>6}{'fail':>6}{'tok/s':>9}{'p50 s':>8}{'p99 s':>8}{'TTFT p50':>10}{'drafted':>9}")
    for row in table:
        print(f"{row['config']:<12}{row['concurrency']:>8}{row['requests']:>6}{row['failed']:>6}"
              f"{row['throughput_tok_s']:>9.2f}{row['latency_p50_s']:>8.2f}{row['latency_p99_s']:>8.2f}{row['ttft_p50_s']:>10.2f}"
              f"{row['drafted_steps_share']:>9.0%}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "table": table, "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
