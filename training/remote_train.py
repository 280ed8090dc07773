"""Train a draft on a rented accelerator whose upload and download are size-capped (`python -m training.remote_train`).

A remote GPU box often takes a bounded upload and returns a bounded download (here: 64 MiB each way),
while a pruned 4-layer draft is 350 MB in fp32 and its corpus 43 MB of uint32 ids. This tool moves only
what training needs, in compact forms, and runs the same `python -m training.pretrain` there:

    # here: draft weights as int4 (group 32) + corpus as lzma'd uint16 draft ids + tokenizer, ~59 MB
    python -m training.remote_train pack --draft runs/d4/pruned --corpus ~/.cache/fastdraft/corpus/qwen2.5 --out .gpu
    # there: rebuild the HF folder and corpus, time a few steps, train for --budget-s, return int8 weights
    python -m training.remote_train train --bundle .gpu --work /tmp/heal --out $OUT --budget-s 330
    # here: the trained HF folder = the returned weights (+ the bundle's embedding when it was frozen)
    python -m training.remote_train unpack-result --draft runs/d4/pruned --bundle .gpu --result $OUT --out runs/d4/healed

Three modes. Healing a pruned sibling (default): the embedding (tied input/output of a vocab_map input
"draft" draft) travels as int4 and stays frozen (`--freeze-embeddings`); `unpack-result` rebuilds the
very same int4-rounded values, so what was trained is what ships, and only the transformer blocks come
back. From scratch (`--train-embeddings`): the embedding trains too and comes back with the blocks. What
comes back is int8 per output row (the IR export quantizes to int8 again). Continuing a trained draft
(`pack --weights int8`, `train --train-embeddings [--grow-layers N]`): the weights travel as int8 rows, so
training resumes from nearly what was trained, optionally grown deeper first (training/grow.py), and the
trained model's config comes back with its weights. `pack --sources` sends only some of the corpus's
sources (the ones not trained on yet, when the upload is tight). Everything is deterministic numpy; no
network access is needed there.
"""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from training import vocab_map as vm

class BundleError(ValueError):
    """A bundle, corpus or result that cannot be packed or rebuilt; the message names the file or option."""


GROUP = 32
EMBEDDING = "model.embed_tokens.weight"
RESULT_FILE_LIMIT = 15 << 20  # the download takes files of at most 16 MiB


# ---------------------------------------------------------------- quantization for transport

def int4_pack(weight: np.ndarray) -> dict[str, np.ndarray]:
    """Symmetric int4 per group of 32 along rows: codes packed two per byte, fp16 scales."""
    rows, cols = weight.shape
    assert cols % GROUP == 0, (weight.shape, GROUP)
    groups = weight.astype(np.float32).reshape(-1, GROUP)
    scale = (np.abs(groups).max(axis=1) / 7.0).astype(np.float16)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)
    codes = (np.clip(np.rint(groups / safe[:, None]), -8, 7) + 8).astype(np.uint8).reshape(-1)
    return {"packed": codes[0::2] | (codes[1::2] << 4), "scale": scale, "shape": np.array([rows, cols])}


def int4_unpack(packed: np.ndarray, scale: np.ndarray, shape: np.ndarray) -> np.ndarray:
    codes = np.empty(packed.size * 2, dtype=np.int8)
    codes[0::2] = (packed & 0x0F).astype(np.int8) - 8
    codes[1::2] = (packed >> 4).astype(np.int8) - 8
    groups = codes.reshape(-1, GROUP).astype(np.float32) * scale.astype(np.float32)[:, None]
    return groups.reshape(int(shape[0]), int(shape[1]))


def int8_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(weight).max(axis=1).astype(np.float32) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8), scale


# ---------------------------------------------------------------- pack (here)

def pack(draft: Path, corpus_dir: Path, out: Path, weights: str = "int4", sources: list[str] | None = None) -> None:
    from safetensors.numpy import load_file

    from training.data import Corpus

    vocab = vm.load(draft)
    if vocab is None or not vocab.input_reduced:
        raise BundleError(f"{draft}: pack expects a draft with a reduced tied vocabulary (training.prune --reduce-input)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    state = {}
    for path in sorted(draft.glob("*.safetensors")):
        state.update(load_file(str(path)))
    arrays = {}
    for name, tensor in state.items():
        if tensor.ndim == 2:
            parts = int4_pack(tensor) if weights == "int4" else dict(zip(("q", "scale"), int8_rows(tensor)))
            for part, value in parts.items():
                arrays[f"{name}::{part}"] = value
        else:
            arrays[name] = tensor.astype(np.float32)
    np.savez(out / "weights.npz", **arrays)
    for name in ("config.json", "generation_config.json", vm.MAP_JSON, "tokenizer_config.json", "chat_template.jinja"):
        if (draft / name).exists():
            shutil.copy2(draft / name, out / name)
    (out / "tokenizer.json.xz").write_bytes(lzma.compress((draft / "tokenizer.json").read_bytes(), preset=9))
    # corpus: each domain's stream (of the chosen sources) in draft ids (fits uint16), lzma'd
    corpus = Corpus(corpus_dir)
    listed = [s["name"] for s in corpus.manifest["sources"]]
    unknown = sorted(set(sources or []) - set(listed))
    if unknown:
        raise BundleError(f"--sources: {', '.join(unknown)} not in {corpus_dir} (it has {', '.join(listed)})")
    streams: dict[str, list[np.ndarray]] = {}
    for source in corpus.manifest["sources"]:
        if source["tokens"] and (not sources or source["name"] in sources):
            shard = np.fromfile(corpus_dir / "tokens" / f"{source['name']}.bin", dtype=np.uint32)
            streams.setdefault(source["domain"], []).append(shard)
    table = vocab.input_table()
    domains = {}
    for domain, shards in streams.items():
        ids = table[np.concatenate(shards)]
        if ids.max() >= 1 << 16:
            raise BundleError(f"draft vocabulary of {vocab.model_vocab_size} rows does not fit uint16")
        (out / f"{domain}.u16.xz").write_bytes(lzma.compress(ids.astype(np.uint16).tobytes(), preset=6))
        domains[domain] = int(ids.size)
    manifest = {"corpus": corpus.manifest, "domains": domains, "draft": str(draft), "weights": weights,
                "sources": sources or listed}
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"bundle {out}: {total / 1e6:.1f} MB ({', '.join(f'{d} {n} tokens' for d, n in domains.items())})")


def bundle_state(bundle: Path) -> dict[str, np.ndarray]:
    """The fp32 weights the bundle describes (int4/int8 matrices dequantized exactly as on the other side)."""
    data = np.load(bundle / "weights.npz")
    state, matrices = {}, {}
    for key in data.files:
        name, _, part = key.partition("::")
        if part:
            matrices.setdefault(name, {})[part] = data[key]
        else:
            state[name] = data[key]
    for name, parts in matrices.items():
        if "packed" in parts:
            state[name] = int4_unpack(parts["packed"], parts["scale"], parts["shape"])
        else:
            state[name] = parts["q"].astype(np.float32) * parts["scale"][:, None]
    return state


# ---------------------------------------------------------------- train (there)

def unpack_bundle(bundle: Path, work: Path) -> tuple[Path, Path]:
    """(draft HF folder, corpus folder) rebuilt from the bundle under `work`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from training.corpus import FORMAT, MANIFEST
    from training.draft_folder import save_draft

    manifest = json.loads((bundle / "bundle.json").read_text())
    vocab = vm.load(bundle)
    tokenizer_dir = work / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "tokenizer.json").write_bytes(lzma.decompress((bundle / "tokenizer.json.xz").read_bytes()))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (bundle / name).exists():
            shutil.copy2(bundle / name, tokenizer_dir / name)
    # corpus: back to uint32 target ids; the unknown row becomes a target id outside the map, which the
    # draft reads as the unknown row again and never has to predict (label -100): the same batches
    corpus_dir = work / "corpus"
    (corpus_dir / "tokens").mkdir(parents=True, exist_ok=True)
    outside = int(np.setdiff1d(np.arange(vocab.target_vocab_size), vocab.draft_to_target)[0])
    to_target = np.append(vocab.draft_to_target, outside).astype(np.uint32)
    sources = []
    for domain, count in manifest["domains"].items():
        ids = np.frombuffer(lzma.decompress((bundle / f"{domain}.u16.xz").read_bytes()), dtype=np.uint16)
        assert ids.size == count, (domain, ids.size, count)
        to_target[ids].tofile(corpus_dir / "tokens" / f"{domain}.bin")
        sources.append({"name": domain, "domain": domain, "tokens": count})
    original = manifest["corpus"]
    (corpus_dir / MANIFEST).write_text(json.dumps({
        "format": FORMAT, "version": 1, "sources": sources, "stages": original["stages"],
        "domains": {d: {"tokens": n, "sources": [d]} for d, n in manifest["domains"].items()},
        "tokenizer": {**original["tokenizer"], "dir": str(tokenizer_dir)},
        "rebuilt_from": manifest["draft"]}, indent=1) + "\n")
    # draft HF folder
    config = AutoConfig.from_pretrained(bundle)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: torch.from_numpy(v) for k, v in bundle_state(bundle).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise BundleError(f"bundle weights do not fit the config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    draft_dir = save_draft(model, work / "init-hf", tokenizer_dir, vocab, provenance={"rebuilt_from": manifest["draft"]})
    return draft_dir, corpus_dir


def seconds_per_step(log_path: Path) -> float:
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if len(rows) < 3:
        raise BundleError(f"{log_path}: too few steps to time")
    return (rows[-1]["elapsed_s"] - rows[1]["elapsed_s"]) / (len(rows) - 2)


def train(args) -> None:
    from training import pretrain

    work: Path = args.work
    draft_dir, corpus_dir = unpack_bundle(args.bundle, work)
    if args.grow_layers:
        from training import grow

        grow.main(["--draft", str(draft_dir), "--layers", str(args.grow_layers), "--out", str(work / "grown-hf")])
        draft_dir = work / "grown-hf"
    common = ["--corpus", str(corpus_dir), "--stage", args.stage, "--init", str(draft_dir),
              *([] if args.train_embeddings else ["--freeze-embeddings"]), "--bf16", "--device", args.device,
              "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--lr", str(args.lr),
              "--log-every", "1"]
    # time a few steps first, then size the run so its decay phase ends inside the budget
    started = time.monotonic()
    pretrain.main(common + ["--steps", "1000000", "--stop-after-steps", "6", "--checkpoint-every", "1000000",
                            "--out", str(work / "calibrate")])
    per_step = seconds_per_step(work / "calibrate" / "log.jsonl")
    budget = args.budget_s - (time.monotonic() - started)
    steps = max(10, min(args.max_steps, int(budget / per_step)))
    tokens = steps * args.batch_size * args.seq_len
    print(f"calibration: {per_step:.3f} s/step ({args.batch_size * args.seq_len / per_step:,.0f} tokens/s); "
          f"training {steps} steps = {tokens / 1e6:.1f}M tokens", flush=True)
    pretrain.main(common + ["--steps", str(steps), "--checkpoint-every", str(args.checkpoint_every),
                            "--max-minutes", f"{budget * 1.1 / 60:.2f}", "--out", str(work / "train")])
    pack_result(work / "train", args.out, with_embedding=args.train_embeddings)
    shutil.copy2(draft_dir / "config.json", args.out / "model_config.json")


def pack_result(run: Path, out: Path, with_embedding: bool = False) -> None:
    """The trained weights as int8 rows (1-D ones as fp32), in files under the download's per-file limit."""
    import torch

    from training.trainer import latest_checkpoint, load_checkpoint

    if (run / "hf" / "model.safetensors").exists():
        from safetensors.torch import load_file

        state, source = load_file(str(run / "hf" / "model.safetensors")), "hf"
    else:  # stopped by its time limit: the last checkpoint
        checkpoint = latest_checkpoint(run)
        state, source = load_checkpoint(checkpoint)["model"], checkpoint.name
    out.mkdir(parents=True, exist_ok=True)
    files, current, size = [], {}, 0
    for name in sorted(state):
        if name == "lm_head.weight" or (name == EMBEDDING and not with_embedding):
            continue  # tied to the embedding; a frozen embedding is rebuilt from the bundle by the receiver
        tensor = state[name].to(torch.float32).cpu().numpy()
        arrays = dict(zip(("q", "scale"), int8_rows(tensor))) if tensor.ndim == 2 else {"value": tensor}
        nbytes = sum(a.nbytes for a in arrays.values())
        if current and size + nbytes > RESULT_FILE_LIMIT:
            files.append(current)
            current, size = {}, 0
        current.update({f"{name}::{k}": v for k, v in arrays.items()})
        size += nbytes
    files.append(current)
    for index, arrays in enumerate(files):
        np.savez(out / f"blocks-{index}.npz", **arrays)
    shutil.copy2(run / "log.jsonl", out / "log.jsonl")
    shutil.copy2(run / "config.json", out / "train_config.json")
    print(f"result from {source}: {len(files)} files, {sum((out / f'blocks-{i}.npz').stat().st_size for i in range(len(files))) / 2**20:.1f} MiB")


# ---------------------------------------------------------------- unpack-result (here)

def unpack_result(draft: Path, bundle: Path, result: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from training.draft_folder import save_draft

    state: dict[str, np.ndarray] = {}
    parts: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(result.glob("blocks-*.npz")):
        data = np.load(path)
        for key in data.files:
            name, _, part = key.partition("::")
            parts.setdefault(name, {})[part] = data[key]
    for name, arrays in parts.items():
        state[name] = arrays["value"] if "value" in arrays else arrays["q"].astype(np.float32) * arrays["scale"][:, None]
    if EMBEDDING not in state:  # frozen during training: the exact int4-rounded values it trained with
        state[EMBEDDING] = bundle_state(bundle)[EMBEDDING]
    if (result / "model_config.json").exists():  # the trained architecture (e.g. grown deeper there)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(result / "model_config.json")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if (draft / "generation_config.json").exists():  # from_config starts from defaults (no eos)
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(draft)
    else:
        model = AutoModelForCausalLM.from_pretrained(draft, dtype=torch.float32)
    expected = set(model.state_dict()) - {"lm_head.weight"}
    if set(state) != expected:
        raise BundleError(f"result does not cover the draft: missing {sorted(expected - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - expected)[:5]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    model.tie_weights()
    train_config = json.loads((result / "train_config.json").read_text())
    log_rows = [json.loads(line) for line in (result / "log.jsonl").read_text().splitlines() if line.strip()]
    provenance = {"command": "python -m training.remote_train", "init": str(draft), "train": train_config,
                  "steps": log_rows[-1]["step"], "tokens_seen": log_rows[-1]["tokens_seen"],
                  "final_loss": log_rows[-1]["loss"], "train_seconds": log_rows[-1]["elapsed_s"]}
    save_draft(model, out, draft, vm.load(draft), provenance=provenance)
    print(f"trained draft -> {out} (step {provenance['steps']}, loss {provenance['final_loss']:.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="bundle a pruned draft and its corpus for upload")
    p.add_argument("--draft", required=True, type=Path)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--weights", choices=("int4", "int8"), default="int4",
                   help="int4 (group 32) for an init that training will reshape; int8 rows to continue a trained draft")
    p.add_argument("--sources", default=None, help="comma-separated corpus sources to send (default: all)")
    t = sub.add_parser("train", help="on the accelerator: rebuild, calibrate, train, pack the result")
    t.add_argument("--bundle", required=True, type=Path)
    t.add_argument("--work", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--budget-s", type=float, default=330, help="wall seconds for calibration + training")
    t.add_argument("--max-steps", type=int, default=1000, help="cap on optimizer steps (repetition of a small corpus)")
    t.add_argument("--train-embeddings", action="store_true",
                   help="train (and return) the embedding too: for a from-scratch draft")
    t.add_argument("--grow-layers", type=int, default=0,
                   help="grow the draft to this many layers (training/grow.py) before training")
    t.add_argument("--stage", default="code-nl")
    t.add_argument("--device", default="auto")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--seq-len", type=int, default=1024)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--checkpoint-every", type=int, default=250)
    u = sub.add_parser("unpack-result", help="merge the returned weights into a trained HF draft folder")
    u.add_argument("--draft", required=True, type=Path, help="the pruned draft the bundle was made from")
    u.add_argument("--bundle", required=True, type=Path)
    u.add_argument("--result", required=True, type=Path)
    u.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            pack(args.draft, args.corpus, args.out, args.weights, args.sources.split(",") if args.sources else None)
        elif args.command == "train":
            train(args)
        else:
            unpack_result(args.draft, args.bundle, args.result, args.out)
    except BundleError as error:
        parser.exit(2, f"{parser.prog} {args.command}: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
