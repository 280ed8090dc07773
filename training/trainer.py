"""The training loop shared by pretrain and align: schedule, DDP, bf16 autocast, checkpoints, exact resume.

Boundary: takes a model and a `make_batch(step) -> (inputs, labels)` function that returns the WHOLE
global batch as int64 arrays [batch, seq_len] (labels -100 where no loss is taken), optionally followed by the
target's captured top-K ids and log-probabilities [batch, seq_len, K] for the logit-level loss
(training/distill.py, weighted by `args.kd_weight` against cross-entropy); knows nothing about
corpora, prompts or export. Every rank builds the same global batch and keeps its rows, so a run on N
ranks sees exactly the rows a single process would, and the loss is normalized by the global count of
label tokens: one step under `torchrun --nproc-per-node N` equals one single-process step. Runs on CPU
(gloo between ranks) or CUDA (`--device`, nccl between ranks); bf16 autocast on either.

Checkpoints: `<out>/checkpoints/step-<n>/state.pt` (model, optimizer, step, tokens seen, RNG states,
resolved config) with `meta.json` holding its sha256; `<out>/checkpoints/latest` names the newest one.
A checkpoint is written to a `.partial` folder and renamed, so an interruption never leaves a torn one;
the loss log `<out>/log.jsonl` is cut back to the resumed step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from training.distill import topk_kl_sum

log = logging.getLogger("training.trainer")

clock = time.monotonic  # the run's clock for --max-minutes and the log's elapsed_s (a test skews one rank's)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or fails its checksum; the message names the file."""


def add_train_args(parser, steps: int, lr: float, batch_size: int, seq_len: int) -> None:
    """The optimization flags shared by pretrain and align (kebab-case, same names in both)."""
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, log.jsonl, config.json, hf/")
    parser.add_argument("--steps", type=int, default=steps, help="total optimizer steps of the run")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="GLOBAL batch in rows (split over ranks)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step on each rank")
    parser.add_argument("--seq-len", type=int, default=seq_len, help="tokens per row")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of --lr")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default: 5%% of --steps)")
    parser.add_argument("--schedule", choices=("cosine", "wsd", "constant"), default="wsd",
                        help="cosine decay, or warmup-stable-decay (good for short runs that may be extended)")
    parser.add_argument("--decay-frac", type=float, default=0.2, help="wsd: fraction of the run spent decaying")
    parser.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (2-D weights only)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="clip the global grad norm (0 disables)")
    parser.add_argument("--freeze-input-embedding", action="store_true",
                        help="do not train the input embedding (a pruned sibling's is already right; saves AdamW "
                             "state and time on a 151k x h matrix; not for tied embeddings)")
    parser.add_argument("--freeze-embeddings", action="store_true",
                        help="train neither the input embedding nor the output layer (tied or not): heal only the "
                             "transformer blocks of a pruned sibling whose vocabulary rows are already right")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for forward/backward (weights stay fp32)")
    parser.add_argument("--device", default="auto",
                        help="'cpu', 'cuda' or 'auto' (cuda when available); under torchrun each rank takes "
                             "cuda:LOCAL_RANK and nccl")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and data order")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads per rank (default: torch's)")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="save a checkpoint every N steps")
    parser.add_argument("--log-every", type=int, default=1, help="write a log.jsonl line every N steps")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (with a checkpoint) after this much wall time; rerun to resume")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="stop (with a checkpoint) after this many steps in this invocation; rerun to resume")
    parser.add_argument("--log-level", default="INFO", help="logging level")


def lr_at(step: int, args) -> float:
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 20)
    floor = args.lr * args.min_lr_ratio
    if step < warmup:
        return args.lr * (step + 1) / warmup
    if args.schedule == "constant":
        return args.lr
    if args.schedule == "cosine":
        progress = (step - warmup) / max(1, args.steps - warmup)
        return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = int(args.steps * (1 - args.decay_frac))
    if step < decay_start:
        return args.lr
    progress = (step - decay_start) / max(1, args.steps - decay_start)
    return args.lr + (floor - args.lr) * min(1.0, progress)


def resolve_device(name: str = "auto") -> torch.device:
    """The device this rank trains on: cuda:LOCAL_RANK when asked for (or available with 'auto'), else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible to torch")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name != "cpu":
        raise SystemExit(f"--device must be cpu, cuda or auto, got {name!r}")
    return torch.device("cpu")


def setup_distributed(device: torch.device | None = None) -> tuple[int, int]:
    """(rank, world size); under torchrun (WORLD_SIZE > 1) initializes nccl on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device is not None and device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def make_optimizer(model, args) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


# ---------------------------------------------------------------- checkpoints

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(out: Path, model, optimizer, step: int, tokens_seen: int, config: dict, keep: int = 1) -> Path:
    root = out / "checkpoints"
    final = root / f"step-{step:08d}"
    partial = root / f"step-{step:08d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "tokens_seen": tokens_seen,
        "config": config, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                  "python": random.getstate()},
    }
    torch.save(state, partial / "state.pt")
    meta = {"step": step, "tokens_seen": tokens_seen, "data_position": {"next_step": step, "seed": config.get("seed")},
            "sha256": _sha256(partial / "state.pt")}
    (partial / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    latest_tmp = root / "latest.tmp"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, root / "latest")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".partial"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    folder = out / "checkpoints" / pointer.read_text().strip()
    if not folder.is_dir():
        raise CheckpointError(f"{pointer}: names {folder.name}, which does not exist")
    return folder


def load_checkpoint(folder: Path) -> dict:
    state_path, meta_path = folder / "state.pt", folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({error})") from None
    if not state_path.exists():
        raise CheckpointError(f"{state_path}: missing")
    actual = _sha256(state_path)
    if actual != meta.get("sha256"):
        raise CheckpointError(f"{state_path}: corrupt (sha256 {actual[:12]}..., expected {str(meta.get('sha256'))[:12]}...)")
    try:
        return torch.load(state_path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a torn pickle/zip
        raise CheckpointError(f"{state_path}: cannot be read ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------- loop

def train(model, make_batch: Callable[[int], tuple[np.ndarray, np.ndarray]], args, config: dict,
          on_finish: Callable[[object], None] | None = None) -> dict:
    """Run (or resume) the optimization described by `args`; returns {"step", "finished", "loss"}.

    `on_finish(model)` runs on rank 0 after the last step (save the HF folder there).
    """
    device = resolve_device(getattr(args, "device", "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    rank, world = setup_distributed(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    if args.batch_size % (world * args.grad_accum):
        raise SystemExit(f"--batch-size ({args.batch_size}) must be a multiple of ranks x --grad-accum "
                         f"({world} x {args.grad_accum})")
    if args.freeze_input_embedding:
        if model.get_input_embeddings().weight is model.get_output_embeddings().weight:
            raise SystemExit("--freeze-input-embedding: this draft ties its input and output embeddings")
        model.get_input_embeddings().weight.requires_grad_(False)
    if getattr(args, "freeze_embeddings", False):
        model.get_input_embeddings().weight.requires_grad_(False)
        model.get_output_embeddings().weight.requires_grad_(False)
    model.to(device)
    optimizer = make_optimizer(model, args)
    start_step, tokens_seen = 0, 0
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if rank == 0:
            log.info("resuming from %s (step %d, %d tokens seen)", checkpoint, start_step, tokens_seen)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")
        _truncate_log(out / "log.jsonl", start_step)
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_model = model
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else nullcontext
    micro_rows = args.batch_size // args.grad_accum
    rank_rows = micro_rows // world
    started, step, loss_value = clock(), start_step, float("nan")
    bar = tqdm(total=args.steps, initial=start_step, desc="train", unit="step", disable=rank != 0)
    steps_this_run = 0
    while step < args.steps:
        # lr for this step
        lr = lr_at(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # data: the whole global batch, then this rank's rows of each micro-batch
        inputs, labels, *captured = make_batch(step)
        assert inputs.shape == labels.shape and inputs.shape[0] == args.batch_size, inputs.shape
        kd_weight = getattr(args, "kd_weight", 0.0) if captured else 0.0
        label_tokens = int((labels != -100).sum())
        # forward/backward: loss summed over tokens / global token count (x world: DDP averages grads)
        optimizer.zero_grad(set_to_none=True)
        local_loss = torch.zeros((), device=device)
        for micro in range(args.grad_accum):
            lo = micro * micro_rows + rank * rank_rows
            x = torch.from_numpy(inputs[lo:lo + rank_rows]).to(device, non_blocking=True)
            y = torch.from_numpy(labels[lo:lo + rank_rows]).to(device, non_blocking=True)
            sync = nullcontext() if (world == 1 or micro == args.grad_accum - 1) else ddp_model.no_sync()
            with sync:
                with autocast():
                    logits = ddp_model(input_ids=x).logits
                loss_sum = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
                if kd_weight:
                    top_ids, top_logprobs = (torch.from_numpy(a[lo:lo + rank_rows]).to(device) for a in captured)
                    loss_sum = (1 - kd_weight) * loss_sum + kd_weight * topk_kl_sum(logits, top_ids, top_logprobs)
                (loss_sum * world / max(1, label_tokens)).backward()
            local_loss += loss_sum.detach()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        step += 1
        steps_this_run += 1
        tokens_seen += int(inputs.size)
        if world > 1:
            dist.all_reduce(local_loss)
        loss_value = float(local_loss) / max(1, label_tokens)
        # log
        if rank == 0:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            if step % args.log_every == 0 or step == args.steps:
                elapsed = clock() - started
                with open(out / "log.jsonl", "a") as handle:
                    handle.write(json.dumps({"step": step, "loss": round(loss_value, 6), "lr": lr,
                                             "tokens_seen": tokens_seen, "elapsed_s": round(elapsed, 2)}) + "\n")
        # checkpoint and stop
        out_of_time = args.max_minutes is not None and clock() - started > 60 * args.max_minutes
        if world > 1 and args.max_minutes is not None:
            out_of_time = rank_zero_decides(out_of_time, device)  # each rank's own clock could stop it alone
        stop_now = out_of_time or (args.stop_after_steps is not None and steps_this_run >= args.stop_after_steps)
        if rank == 0 and (step % args.checkpoint_every == 0 or step == args.steps or stop_now):
            save_checkpoint(out, model, optimizer, step, tokens_seen, config)
        if stop_now and step < args.steps:
            if rank == 0:
                log.info("stopping at step %d of %d; rerun the same command to resume", step, args.steps)
            break
    bar.close()
    finished = step >= args.steps
    if finished and rank == 0 and on_finish is not None:
        on_finish(model)
    if world > 1:
        dist.barrier()
    return {"step": step, "finished": finished, "loss": loss_value, "tokens_seen": tokens_seen}


def rank_zero_decides(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank (a collective: every rank must call it at the same step). A rank that stopped
    by its own clock while the others ran on would leave them waiting in the next step's all-reduce forever."""
    value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
