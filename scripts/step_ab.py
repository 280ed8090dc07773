"""One-token decode steps of the same IR loaded several ways, alternated step by step, with paired differences.

    python scripts/step_ab.py --variants mapped,in-memory,in-memory           # does the first model compiled pay?
    python scripts/step_ab.py --variants in-memory,mapped,cached --model qwen2.5-coder-0.5b-instruct
    python scripts/step_ab.py --variants unsliced,num-logits,unsliced,num-logits  # the engine's output-layer slice

Every variant is a separate compiled model with its own KV cache, compiled in the order given (so a
variant listed twice measures the position alone). All get the same prompt, then take one-token steps
in turn, the order of the turn rotated by one each step, so this VM's drift hits all of them alike.
Printed per variant: mean and median step time, and the mean and median of its paired difference with
the first variant (the same step, moments apart). Variants:

  mapped      what the engine does: weights mapped from the IR's .bin (OpenVINO's default), the
              `num_logits` slice before the output layer (drafting/ov_model.py)
  in-memory   the same, with the weights read into memory instead
  cached      the same as mapped, compiled through a compile cache (a temporary CACHE_DIR, filled first)
  num-logits  the same as mapped (a second name, to compare slicing variants side by side)
  unsliced    the IR as exported, mapped: logits for every input position
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("in-memory", "mapped", "cached", "num-logits", "unsliced")


def compile_variant(ir_dir: Path, variant: str, cache_dir: str):
    import openvino as ov

    from drafting.ov_model import NUM_LOGITS_INPUT, slice_hidden_before_lm_head

    core = ov.Core()
    model = core.read_model(ir_dir / "openvino_model.xml", config={"ENABLE_MMAP": variant != "in-memory"})
    if variant != "unsliced":
        slice_hidden_before_lm_head(model)
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if variant == "cached":
        config["CACHE_DIR"] = cache_dir
        core.compile_model(model, "CPU", config)  # fills the cache; the next compile imports from it
    request = core.compile_model(model, "CPU", config).create_infer_request()
    has_num_logits = any(NUM_LOGITS_INPUT in port.get_names() for port in request.model_inputs)
    return request, has_num_logits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct", help="catalog name or IR folder")
    parser.add_argument("--variants", default="mapped,in-memory,in-memory",
                        help=f"comma-separated, in compile order; each one of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=150, help="one-token steps per variant")
    parser.add_argument("--prompt-tokens", type=int, default=150, help="length of the (synthetic) prompt")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or len(variants) < 2:
        parser.error(f"--variants: at least two of {', '.join(VARIANTS)}; got {args.variants!r}")
    if args.steps < 10:
        parser.error(f"--steps must be at least 10, got {args.steps}")

    from models.resolve import resolve_model

    ir_dir = Path(resolve_model(args.model, pull=False).ir_dir)
    with tempfile.TemporaryDirectory() as cache_dir:
        requests = [compile_variant(ir_dir, v, cache_dir) for v in variants]
    prompt = list(range(1000, 1000 + args.prompt_tokens))

    def step(index: int, ids: list[int], position: int) -> None:
        request, has_num_logits = requests[index]
        inputs = {"input_ids": np.asarray([ids], dtype=np.int64),
                  "attention_mask": np.ones((1, position + len(ids)), dtype=np.int64),
                  "position_ids": np.arange(position, position + len(ids), dtype=np.int64)[None],
                  "beam_idx": np.zeros(1, dtype=np.int32)}
        if has_num_logits:
            inputs["num_logits"] = np.array([1], dtype=np.int64)
        request.infer(inputs, share_inputs=True, share_outputs=True)

    for index in range(len(variants)):
        step(index, prompt, 0)
    times: list[list[float]] = [[] for _ in variants]
    for i in range(args.steps):
        order = list(range(len(variants)))
        order = order[i % len(order):] + order[:i % len(order)]
        for index in order:
            start = time.perf_counter()
            step(index, [500 + i], len(prompt) + i)
            times[index].append(time.perf_counter() - start)
    warm = 5  # the first steps allocate
    base = times[0][warm:]
    print(f"{ir_dir.name}: {args.steps} one-token steps per variant after a {args.prompt_tokens}-token prompt")
    for index, name in enumerate(variants):
        mine = times[index][warm:]
        diffs = [a - b for a, b in zip(mine, base)]
        print(f"{index + 1}. {name:10s} mean {statistics.mean(mine) * 1e3:6.2f} ms  median "
              f"{statistics.median(mine) * 1e3:6.2f} ms  vs 1.: mean {statistics.mean(diffs) * 1e3:+.2f} ms, "
              f"median {statistics.median(diffs) * 1e3:+.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
