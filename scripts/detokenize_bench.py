"""Streaming detokenization cost: microseconds per token of the incremental detokenizer vs a full re-decode per push.

    python scripts/detokenize_bench.py                                   # qwen2.5-coder tokenizer, 100 and 2,000 tokens
    python scripts/detokenize_bench.py --tokenizer smollm2-135m-instruct --lengths 100,2000,8000

Token ids are a fixed text (code, prose, CJK, emoji) encoded by the real tokenizer and repeated up to each length,
then pushed one token at a time, as a plain decode streams them, with one stop string that never matches (the
hold-back check runs as it does in the server). Both detokenizers release the same text; the script checks it.
The baseline is the algorithm drafting/detokenize.py replaced, kept here as it was: decode every token so far on
every push, so its cost per token grows with the length. Timed: the pushes and the final flush; runs go
round-robin over lengths and algorithms, best of --repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# short (about 40 tokens), so that 100 tokens and 2,000 tokens hold the same mix of code, prose, CJK and emoji
SAMPLE_TEXT = "def mean(xs):\n    return sum(xs) / len(xs)  # 平均值 ✅\n\nThe mean of [1, 2, 3] is 2.0 👋🏽!\n"


class FullRedecodeDetokenizer:
    """The replaced algorithm: the whole output decoded on every push (same hold-back rules)."""

    def __init__(self, tokenizer, stop_strings: list[str] | None = None, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in (stop_strings or []) if s]
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self.text = ""
        self.stopped = False
        self.matched_stop: str | None = None

    def push(self, token_ids: list[int]) -> str:
        if self.stopped:
            return ""
        self.token_ids.extend(token_ids)
        full = self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens)
        stop_at = self._find_stop(full)
        if stop_at is not None:
            self.stopped = True
            return self._release(full[:stop_at])
        safe = len(full)
        if full.endswith("\ufffd"):
            safe = len(full.rstrip("\ufffd"))
        safe = min(safe, len(full) - self._partial_stop_length(full))
        return self._release(full[:safe])

    def flush(self) -> str:
        if self.stopped:
            return ""
        return self._release(self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens))

    def _release(self, upto: str) -> str:
        if len(upto) <= len(self.text):
            return ""
        delta = upto[len(self.text):]
        self.text = upto
        return delta

    def _find_stop(self, full: str) -> int | None:
        longest = max((len(s) for s in self.stop_strings), default=0)
        search_from = max(0, len(self.text) - longest + 1)
        best = None
        for stop in self.stop_strings:
            at = full.find(stop, search_from)
            if at != -1 and (best is None or at < best):
                best, self.matched_stop = at, stop
        return best

    def _partial_stop_length(self, full: str) -> int:
        longest = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(full)), longest, -1):
                if full.endswith(stop[:length]):
                    longest = length
                    break
        return longest


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="qwen2.5-coder-1.5b-instruct",
                        help="cached model name whose hf/ folder holds tokenizer.json, or a tokenizer folder")
    parser.add_argument("--lengths", default="100,2000", help="comma-separated output lengths in tokens")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per length and algorithm; the best is shown")
    parser.add_argument("--stop", default="<never matches>", help="stop string given to both detokenizers")
    return parser.parse_args()


def tokenizer_folder(spec: str) -> Path:
    from models.resolve import hf_dir_for

    folder = Path(spec) if Path(spec).is_dir() else hf_dir_for(spec)
    if not (folder / "tokenizer.json").is_file():
        raise SystemExit(f"--tokenizer: no tokenizer.json in {folder}")
    return folder


def stream_seconds(detokenizer_class, tokenizer, ids: list[int], stop: str) -> tuple[float, str]:
    """Wall time to push `ids` one at a time and flush; and the text released."""
    detokenizer = detokenizer_class(tokenizer, [stop])
    started = time.perf_counter()
    for token_id in ids:
        detokenizer.push([token_id])
    detokenizer.flush()
    return time.perf_counter() - started, detokenizer.text


def main() -> int:
    args = parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.repeats < 1 or min(lengths) < 1:
        raise SystemExit(f"--repeats and --lengths must be >= 1, got {args.repeats} and {args.lengths}")
    from transformers import AutoTokenizer

    from drafting.detokenize import IncrementalDetokenizer
    from fastdraft.machine import describe_cpu

    folder = tokenizer_folder(args.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sample = tokenizer.encode(SAMPLE_TEXT, add_special_tokens=False)
    print(f"machine: {describe_cpu()}")
    print(f"tokenizer: {folder}; pushes of one token, stop {args.stop!r}, best of {args.repeats}")
    print(f"{'tokens':>7} {'full re-decode us/token':>24} {'incremental us/token':>21} {'speedup':>8}")
    algorithms = {"full": FullRedecodeDetokenizer, "incremental": IncrementalDetokenizer}
    streams = {length: (sample * (length // len(sample) + 1))[:length] for length in lengths}
    seconds = {(length, name): [] for length in lengths for name in algorithms}
    for _ in range(args.repeats):  # round-robin, so drift in machine load hits every cell alike
        for length, ids in streams.items():
            for name, detokenizer_class in algorithms.items():
                elapsed, text = stream_seconds(detokenizer_class, tokenizer, ids, args.stop)
                if text != tokenizer.decode(ids, skip_special_tokens=True):
                    raise SystemExit(f"{name}: released text differs from the full decode at {length} tokens")
                seconds[length, name].append(elapsed)
    for length in lengths:
        full, incremental = (min(seconds[length, name]) / length * 1e6 for name in algorithms)
        print(f"{length:>7} {full:>24.1f} {incremental:>21.1f} {full / incremental:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
