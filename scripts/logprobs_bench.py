"""Cost of the top-k log-probs the engine computes per emitted token (logprobs asked, or the choice captured).

    python scripts/logprobs_bench.py                       # vocab 151,936 (Qwen2.5), top 8, 1/8/24 rows
    python scripts/logprobs_bench.py --vocab 49152 --top 20

Rows are random logits; both algorithms score the same rows and must agree. The baseline is the search that
drafting/logprobs.py replaced, kept here as it was: an argpartition of every whole row. Best of --repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def whole_row_top(rows: np.ndarray, num_top: int) -> np.ndarray:
    return np.argpartition(rows, -num_top, axis=1)[:, -num_top:]


def best_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--rows", default="1,8,24", help="comma-separated rows per call (emitted tokens per step)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    from drafting import logprobs
    from fastdraft.machine import describe_cpu

    narrowed_top = logprobs.top_ids
    print(f"machine: {describe_cpu()}")
    print(f"vocab {args.vocab}, top {args.top}, best of {args.repeats}")
    print(f"{'rows':>5} {'whole-row search ms/row':>24} {'narrowed ms/row':>16} {'speedup':>8}")
    rng = np.random.default_rng(0)
    for count in (int(n) for n in args.rows.split(",")):
        rows = (rng.standard_normal((count, args.vocab)) * 3).astype(np.float32)
        tokens = rng.integers(0, args.vocab, count).tolist()
        narrowed = logprobs.token_logprobs(rows, tokens, args.top)
        try:
            logprobs.top_ids = whole_row_top
            baseline = logprobs.token_logprobs(rows, tokens, args.top)
            old = best_seconds(lambda: logprobs.token_logprobs(rows, tokens, args.top), args.repeats)
        finally:
            logprobs.top_ids = narrowed_top
        if [lp.top for lp in baseline] != [lp.top for lp in narrowed]:
            raise SystemExit(f"the two searches disagree at {count} rows")
        new = best_seconds(lambda: logprobs.token_logprobs(rows, tokens, args.top), args.repeats)
        print(f"{count:>5} {old / count * 1e3:>24.3f} {new / count * 1e3:>16.3f} {old / new:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
