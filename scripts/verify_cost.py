"""What a verify costs on this CPU: one target call by tokens fed, under OpenVINO compile options, side by side.

    python scripts/verify_cost.py                                   # the default target, int8 weights
    python scripts/verify_cost.py --weight-formats int8,int4 --tokens 1,2,4,8,16 --batch 1,4

For each configuration (weight format x compile options) the paged target is compiled once; then calls of
1, 2, 4, ... tokens on one sequence (a verify of k drafts feeds k+1) and of B sequences x 1 token (a batched
decode step), at a context of --context tokens, are timed round-robin across configurations, so drift in
machine load hits all alike. Printed: median ms per call and its ratio to the same configuration's 1-token
call. The engine does not read these numbers (it measures its own costs online, drafting/cost_model.py);
they say whether a compile option moves the slope that decides how long a draft pays.

Options compared (--options): `default`; `dq0` (DYNAMIC_QUANTIZATION_GROUP_SIZE 0: no int8 activations in
int8 matmuls); `dq128`; `kv-u8` (KV_CACHE_PRECISION u8); `f32` (INFERENCE_PRECISION_HINT f32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPTIONS = {
    "default": {},
    "dq0": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"},
    "dq128": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"},
    "kv-u8": {"KV_CACHE_PRECISION": "u8"},
    "f32": {"INFERENCE_PRECISION_HINT": "f32"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="qwen2.5-coder-1.5b-instruct", help="catalog name or IR folder")
    parser.add_argument("--weight-formats", default="int8", help="comma-separated (each is pulled if missing)")
    parser.add_argument("--options", default="default,dq0,kv-u8", help=f"comma-separated of {', '.join(OPTIONS)}")
    parser.add_argument("--tokens", default="1,2,4,6,9", help="tokens of one sequence per call")
    parser.add_argument("--batch", default="2,4,8", help="sequences x 1 token per call")
    parser.add_argument("--context", type=int, default=256, help="cached tokens per sequence")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per shape and configuration")
    args = parser.parse_args()

    from drafting.paged_model import PagedBatch, PagedCausalLM
    from fastdraft.machine import describe_cpu
    from models.resolve import resolve_model

    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {describe_cpu()}", flush=True)
    token_counts = [int(x) for x in args.tokens.split(",")]
    batches = [int(x) for x in args.batch.split(",") if x]
    blocks_per_sequence = (args.context + max(token_counts)) // 32 + 2
    sequences = max(batches + [1])
    models = {}
    for weight_format in args.weight_formats.split(","):
        ir_dir = resolve_model(args.target, weight_format=weight_format).ir_dir
        for option in args.options.split(","):
            model = PagedCausalLM(ir_dir, num_blocks=blocks_per_sequence * sequences + 1, ov_config=OPTIONS[option])
            tables = [list(range(i * blocks_per_sequence, (i + 1) * blocks_per_sequence)) for i in range(sequences)]
            prompt = list(range(1000, 1000 + args.context))
            for table in tables:  # the context every call attends over
                model.forward(PagedBatch([prompt], [0], [table], [1]))
            models[(weight_format, option)] = (model, tables)
    shapes = [("1 x", n) for n in token_counts] + [("B x 1,", b) for b in batches]
    times: dict = {(key, shape): [] for key in models for shape in shapes}
    for _ in range(args.repeats):
        for shape in shapes:
            for key, (model, tables) in models.items():  # round-robin: drift hits every configuration alike
                kind, n = shape
                if kind == "1 x":
                    batch = PagedBatch([[5] * n], [args.context], [tables[0]], [n])
                else:
                    batch = PagedBatch([[5]] * n, [args.context] * n, tables[:n], [1] * n)
                start = time.perf_counter()
                model.forward(batch)
                times[(key, shape)].append(time.perf_counter() - start)
    header = "".join(f"{kind} {n:<3}".rjust(14) for kind, n in shapes)
    print(f"\n{'weights/options':<18}{header}   (median ms per call; ratio to 1 token)")
    for key in models:
        base = statistics.median(times[(key, ("1 x", 1))])
        cells = "".join(f"{statistics.median(times[(key, s)]) * 1000:8.1f} {statistics.median(times[(key, s)]) / base:4.2f}x"
                        for s in shapes)
        print(f"{'/'.join(key):<18}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
