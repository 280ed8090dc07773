"""A draft for any target in one command: plan, then every stage of the factory, each resumable.

    python -m training.build --target smollm2-135m-instruct --out runs/smollm2 --budget cpu-1h
    python -m training.build --target ~/models/my-llama-hf --out runs/mine --budget gpu-15m --device cuda
    torchrun --nproc-per-node 4 -m training.build --target my-model.gguf --out runs/mine --budget gpu-2h
    python -m training.build --recipe training/recipes/fastdraft-qwen2.5-coder-1.5b.json --out runs/shipped
    python -m training.build --target smollm2-135m-instruct --out runs/smollm2 --plan   # print the plan, run nothing

The plan (training/build_plan.py: preset, vocabulary, steps and prompt counts from the target, the
budget and a measured calibration of this machine, training/calibrate.py) is printed with its time
estimate before any long stage starts and saved as `<out>/plan.json`; a rerun of the same command reads
it back, and a rerun with other options is refused. The target is prepared first (models.resolve: pull,
convert, export), because its size, vocabulary, tokenizer and chat template decide the plan. Then the
stages (training/build_stages.py): corpus, vocab, pretrain-nl, pretrain-code-nl, generate, align,
evaluate, summary, publish; each finished one is skipped on a rerun, the interrupted one resumes from its
own partial output. The published draft is what `--draft <name>` names in `fastdraft serve`, `generate`
and `bench`.

Under torchrun every rank runs this command: rank 0 plans, the training stages run on every rank (DDP,
training/trainer.py), the other stages on rank 0 while the other ranks wait for their records.

Boundary: command line, plan reuse and refusals before anything runs; the stages do the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from training.build_plan import format_plan, load_budget, load_recipe, make_plan
from training.build_target import BuildRefused, publish_dir, read_target
from training.build_stages import Context, check_name_is_free, run_stages, wait_for, write_json
from training.calibrate import measure_target, measure_training, reference_training

def default_name(target_name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in target_name).strip("-.") or "target"
    return f"fastdraft-{cleaned}"[:100]


# ---------------------------------------------------------------- planning

def request_of(args: argparse.Namespace, world_size: int) -> dict:
    """What the plan depends on; a rerun with other values would not be the same build."""
    return {"target": args.target, "budget": args.budget, "recipe": str(args.recipe) if args.recipe else None,
            "name": args.name, "device": args.device, "sources": str(args.sources) if args.sources else None,
            "prompts": sorted(args.prompts), "precision": args.precision, "world_size": world_size}


def plan_build(args: argparse.Namespace, world_size: int) -> dict:
    recipe = load_recipe(args.recipe) if args.recipe else None
    if recipe is not None:
        recipe["path"] = str(args.recipe)
    target_spec = args.target or (recipe or {}).get("target")
    if not target_spec:
        raise BuildRefused("--target is required (a catalog name, a Hugging Face folder, a .gguf file or an IR folder)")
    budget_name = args.budget or (recipe or {}).get("budget") or "cpu-1h"
    budget = load_budget(budget_name)
    device = args.device or budget.device
    overrides = dict(parse_prompt_override(value) for value in args.prompts)
    if not args.plan:
        print(f"preparing the target {target_spec} (its size and vocabulary decide the plan) ...", flush=True)
    target = read_target(target_spec, prepare=not args.plan)
    name = args.name or (recipe or {}).get("name") or default_name(target.name)
    if not args.plan:
        check_name_is_free(name, args.out, args.force)
    else:
        publish_dir(name)  # a bad or taken-by-a-target name is refused by --plan too
    measured_here = device != "cuda" or _cuda_visible()

    def train_speed(preset: str, arch: str, rows: int) -> dict:
        if not measured_here:
            return reference_training(budget, preset, arch, rows)
        settings = budget.settings["pretrain"]
        print(f"calibrating: training steps of {preset} on {device} ...", flush=True)
        return measure_training(preset, arch, rows, settings["batch_size"], settings["seq_len"], settings["bf16"],
                                device, threads=args.threads)

    target_speed = None
    if target.ir_dir is not None:
        print("calibrating: the target's generation speed through our engine ...", flush=True)
        target_speed = measure_target(target.ir_dir, budget.settings["kd"]["batch_size"])
    sources = Path(args.sources) if args.sources else None
    plan = make_plan(target, budget, train_speed, target_speed, name=name, recipe=recipe,
                     recipe_sizes=recipe is not None and budget_name == recipe.get("budget"), world_size=world_size,
                     device=device, sources=sources, prompt_overrides=overrides, precision=args.precision)
    check_sources(plan)
    plan["request"] = request_of(args, world_size)
    plan["planned"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return plan


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_prompt_override(value: str) -> tuple[str, str]:
    task, sep, spec = value.partition("=")
    if not sep or not task or not spec:
        raise BuildRefused(f"--prompts must be TASK=SPEC (e.g. chat=file:my-chat.jsonl), got {value!r}")
    return task, spec


def check_sources(plan: dict) -> None:
    """Every source a corpus of the plan names must be in the sources file."""
    sources = Path(plan["corpus"]["sources"])
    if not sources.exists():
        raise BuildRefused(f"--sources {sources}: no such file")
    names = {s["name"] for s in json.loads(sources.read_text())["sources"]}
    for corpus_name, spec in plan["corpus"]["corpora"].items():
        missing = [n for n in (spec.get("only") or []) + spec.get("exclude", []) if n not in names]
        if missing:
            raise BuildRefused(f"corpus {corpus_name!r} names sources that {sources} does not have: {', '.join(missing)}")


def load_or_make_plan(args: argparse.Namespace, rank: int, world_size: int) -> dict | None:
    path = args.out / "plan.json"
    if path.exists():
        plan = json.loads(path.read_text())
        if plan.get("request") != request_of(args, world_size):
            theirs, ours = plan.get("request", {}), request_of(args, world_size)
            changed = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours[k]!r}" for k in ours if theirs.get(k) != ours[k])
            raise BuildRefused(f"{path} was planned with other options ({changed}); rerun with the same options to "
                               "resume it, or choose another --out")
        if rank == 0:
            print(f"plan: {path} (planned {plan['planned']}; this run resumes it)")
            if args.plan:
                print(format_plan(plan))
        return None if args.plan else plan
    if rank != 0:
        wait_for(path)
        return json.loads(path.read_text())
    plan = plan_build(args, world_size)
    print(format_plan(plan), flush=True)
    if plan["refused"]:
        raise BuildRefused(plan["refused"])
    if args.plan:
        return None
    write_json(path, plan)
    write_json(args.out / "stages" / "target.json", {"stage": "target", "seconds": 0.0, "record": plan["target"],
                                                      "finished": plan["planned"]})
    return plan


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    from training.corpus import DEFAULT_CACHE

    parser = argparse.ArgumentParser(prog="python -m training.build", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--target", default=None,
                        help="the target: catalog name, Hugging Face folder, .gguf file or OpenVINO IR folder "
                             "(default: the recipe's)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: plan.json, every stage's output, stages/")
    parser.add_argument("--budget", default=None,
                        help="cpu-1h, cpu-4h, gpu-15m, gpu-2h, tiny (a smoke run), or cpu-<N>m|h / gpu-<N>m|h "
                             "(training/recipes/budgets.json; default: the recipe's, else cpu-1h)")
    parser.add_argument("--name", default=None,
                        help="the draft's name for --draft NAME (default: the recipe's, else fastdraft-<target>)")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="a recorded recipe (training/recipes/*.json): its structure always, its sizes at its own budget")
    parser.add_argument("--plan", action="store_true", help="print the plan and its time estimate; run nothing")
    parser.add_argument("--force", action="store_true", help="replace a published draft of the same name")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="training device (default: the budget's); under torchrun each rank takes cuda:LOCAL_RANK")
    parser.add_argument("--sources", type=Path, default=None,
                        help="pinned corpus sources (default: training/corpus_sources.json)")
    parser.add_argument("--corpus-cache", type=Path, default=DEFAULT_CACHE, help="where fetched source archives are kept")
    parser.add_argument("--prompts", action="append", default=[], metavar="TASK=SPEC",
                        help="KD prompts of a task instead of the plan's (training.generate --prompts forms, e.g. "
                             "chat=file:my-chat.jsonl); repeatable")
    parser.add_argument("--precision", default=None, help="OpenVINO precision hint for evaluation (f32 for exactness)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per rank in training stages")
    parser.add_argument("--log-level", default="WARNING", help="logging level of the stages (INFO shows their configs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    plan = load_or_make_plan(args, rank, world_size)
    if plan is None:
        return 0
    try:
        run_stages(Context(plan=plan, out=args.out, args=args, rank=rank))
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume from {args.out}", file=sys.stderr)
        return 130
    if rank == 0:
        name, target = plan["name"], plan["target"]["spec"]
        print(f"draft {name!r} is ready: fastdraft serve --target {target} --draft {name}\n"
              f"  summary: {args.out / 'summary.json'}, {args.out / 'summary.png'}; model card: {args.out / 'model_card.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
