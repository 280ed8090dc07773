"""This machine's throughput, measured before a build: training tokens/s of a draft preset, generation tokens/s of the target.

    python -m training.calibrate measure-target ~/.cache/fastdraft/models/smollm2-135m-instruct/ir-int8

Training: a few forward + backward + AdamW steps of a randomly initialized preset at the plan's batch
shape, on the training device (bf16 autocast when the plan trains in bf16). Without a CUDA device, a CUDA
plan uses the budget family's recorded throughput scaled by parameters (said so in the plan). Target:
batched and single-sequence plain decoding through our engine, in a child process (an engine keeps its
weights and KV cache for the life of its process).

Boundary: builds throwaway models and engines, returns numbers; writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from training.build_plan import Budget, preset_params
from training.build_target import BuildRefused


def measure_training(preset: str, arch: str, rows: int, batch_size: int, seq_len: int, bf16: bool, device: str,
                     steps: int = 3, threads: int | None = None) -> dict:
    """Tokens/s of forward + backward + AdamW for the preset (tied `rows`-row vocabulary) on `device`."""
    import torch
    import torch.nn.functional as F

    from training import presets, trainer

    dev = trainer.resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    cfg = presets.replace(presets.from_name(preset, arch=arch), draft_vocab_size=None, tie_embeddings=True)
    model = presets.build_model(cfg, rows).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, rows, (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(0)).to(dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    step()  # warm-up: allocations, kernel selection
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    return {"tokens_per_s": round(batch_size * seq_len / seconds, 1), "step_s": round(seconds, 4), "preset": preset,
            "rows": rows, "batch_size": batch_size, "seq_len": seq_len, "bf16": bf16, "device": str(dev),
            "measured": True, "how": f"{steps} timed steps after one warm-up"}


def reference_training(budget: Budget, preset: str, arch: str, rows: int) -> dict | None:
    """The family's recorded throughput scaled by parameters (a --plan for CUDA on a machine without one)."""
    reference = budget.settings.get("reference_throughput")
    if not reference:
        return None
    scale = reference["params"] / preset_params(preset, arch, rows)["total"]
    return {"tokens_per_s": round(reference["tokens_per_s"] * scale, 1), "preset": preset, "rows": rows,
            "measured": False, "how": f"not measured: no CUDA device here; {reference['device']}'s "
                                      f"{reference['tokens_per_s']:,} tokens/s for {reference['preset']} "
                                      f"({reference['date']}) scaled by parameters"}


def measure_target(ir_dir: Path, batch_size: int, new_tokens: int = 16, timeout_s: float = 600) -> dict:
    """The target's generation tokens/s through our engine, `batch_size` prompts at once and one alone.

    Runs in a child process: an engine keeps its weights and KV cache for the life of its process."""
    command = [sys.executable, "-m", "training.calibrate", "measure-target", str(ir_dir),
               "--batch-size", str(batch_size), "--new-tokens", str(new_tokens)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise BuildRefused(f"measuring the target's generation speed failed ({' '.join(command)}):\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_target_here(ir_dir: Path, batch_size: int, new_tokens: int) -> dict:
    from drafting.loader import load_engine
    from drafting.request import GenerationRequest
    from models.resolve import resolve_model

    target = resolve_model(str(ir_dir))
    engine = load_engine(target, None, max_running=max(1, batch_size), kv_cache_bytes=256 << 20)
    prompt = list(range(8, 40))  # any ids the target reads; its text does not matter for speed

    def run(count: int) -> float:
        started = time.perf_counter()
        generations = [engine.start(GenerationRequest(prompt_ids=prompt, max_new_tokens=new_tokens,
                                                      speculative=False)) for _ in range(count)]
        tokens = 0
        for generation in generations:
            with generation:
                tokens += sum(len(group.token_ids) for group in generation)
        return tokens / (time.perf_counter() - started)

    run(batch_size)  # warm-up: the shapes of a batch and of one sequence get compiled
    return {"batched_tokens_per_s": round(run(batch_size), 2), "single_tokens_per_s": round(run(1), 2),
            "batch_size": batch_size, "new_tokens": new_tokens, "measured": True}


# ---------------------------------------------------------------- child-process entry (target measurement)

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description="measure the target's "
                                     "generation speed through our engine (a child process of training.build)")
    sub = parser.add_subparsers(dest="command", required=True)
    measure = sub.add_parser("measure-target", help="print {batched_tokens_per_s, single_tokens_per_s} as JSON")
    measure.add_argument("ir_dir", type=Path, help="the target's IR folder")
    measure.add_argument("--batch-size", type=int, default=8, help="prompts generated at once")
    measure.add_argument("--new-tokens", type=int, default=16, help="tokens generated per prompt")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(json.dumps(_measure_target_here(args.ir_dir, args.batch_size, args.new_tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
