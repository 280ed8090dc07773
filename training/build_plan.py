"""The plan of a draft build: what the target is, which draft and how much of each stage fit the budget.

    python -m training.build --target smollm2-135m-instruct --out runs/smollm2 --budget cpu-1h --plan

Inputs: the target (catalog name, Hugging Face folder, GGUF file or IR folder; its config.json and
tokenizer), a budget (training/recipes/budgets.json: a family, cpu or gpu, and a duration), optionally a
recorded recipe (training/recipes/*.json), and this machine's throughput, measured here: a few training
steps of the chosen draft on the training device, and a short batched generation by the target through
our engine. Output: one JSON-able dict (the plan) that training/build.py runs stage by stage, and its
printed form with the time estimate.

Choices, in order: the preset is the largest of the budget's presets whose transformer blocks stay under
1/20 of the target's parameters (a draft token must cost a small fraction of a target token), stepped
down while the budget cannot pretrain it on the family's minimum of tokens; the vocabulary is the
target's own when it has at most the budget's `vocab_cap` tokens, else the `vocab_cap` most frequent
corpus tokens, tied to the input (training/vocab_map.py, input "draft"); the embeddings start from an SVD
of the target's when its weights are on disk and at least as wide; steps and prompt counts are what the
budget's share of each stage buys at the measured throughput. A recipe records the structure (corpora,
pretraining stages, KD tasks, learning rates) and, at its own budget, its exact sizes; at another budget
the sizes come from that budget.

Boundary: reads folders and JSON and takes this machine's throughput as measured by training/calibrate.py;
runs no stage and writes no file (training/build.py does both).
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from training.build_target import BuildRefused, TargetInfo, publish_dir

RECIPES_DIR = Path(__file__).with_name("recipes")
BUDGETS_FILE = RECIPES_DIR / "budgets.json"
PLAN_FORMAT = "fastdraft-build-plan"
RECIPE_FORMAT = "fastdraft-build-recipe"
CHAT_EVAL_PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "chat-sharegpt.jsonl"
CHAT_SKIP = 40  # scripts/build_chat_prompts.py's first 40 prompts are CHAT_EVAL_PROMPTS: KD prompts come after
# prompts of each built-in set (training.generate) before its held-out split
PROMPT_SET_SIZES = {"humaneval": 164, "summarize-sotu": 233}
DRAFT_SHARE_OF_TARGET = 1 / 20  # the largest draft blocks / target parameters a preset may have
UNMEASURED_TARGET_TOKENS_PER_S = 20.0  # KD sizing when the target cannot run yet (said so in the plan)


# ---------------------------------------------------------------- budgets and recipes

@dataclass(frozen=True)
class Budget:
    name: str
    family: str  # cpu | gpu
    seconds: float  # of the training device (a cpu budget: of everything)
    settings: dict  # the family's defaults with the named budget's overrides

    @property
    def device(self) -> str:
        return self.settings["device"]

    @property
    def smoke(self) -> bool:
        return bool(self.settings.get("smoke"))


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` on top, dicts merged key by key (one level of nesting and below)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_budget(name: str, path: Path = BUDGETS_FILE) -> Budget:
    data = json.loads(Path(path).read_text())
    families, named = data["families"], data["budgets"]
    if name in named:
        entry = named[name]
        family, seconds = entry["family"], float(entry["seconds"])
        overrides = {k: v for k, v in entry.items() if k not in ("family", "seconds")}
    else:
        match = re.fullmatch(r"(cpu|gpu)-(\d+(?:\.\d+)?)(m|h)", name)
        if not match:
            raise BuildRefused(f"--budget must be one of {', '.join(named)} or cpu-<N>m|h / gpu-<N>m|h "
                               f"(e.g. cpu-90m), got {name!r}")
        family, seconds = match[1], float(match[2]) * (60 if match[3] == "m" else 3600)
        overrides = {}
    return Budget(name=name, family=family, seconds=seconds, settings=merge(families[family], overrides))


def load_recipe(path: Path) -> dict:
    try:
        recipe = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BuildRefused(f"--recipe {path}: cannot be read ({error})") from None
    if recipe.get("format") != RECIPE_FORMAT:
        raise BuildRefused(f"--recipe {path}: format must be {RECIPE_FORMAT!r}, got {recipe.get('format')!r}")
    return recipe


# ---------------------------------------------------------------- presets

def preset_params(preset: str, arch: str, rows: int) -> dict:
    """Parameters of a preset with `rows` embedding rows (tied): {"blocks", "embedding", "total"}."""
    from training.presets import from_name

    cfg = from_name(preset)
    hidden, head_dim = cfg.hidden_size, cfg.hidden_size // cfg.num_heads
    kv = cfg.num_kv_heads * head_dim
    attention = 2 * hidden * hidden + 2 * hidden * kv + (hidden + 2 * kv if arch == "qwen2" else 0)
    layer = attention + 3 * hidden * cfg.intermediate_size + 2 * hidden
    blocks = cfg.num_layers * layer + hidden
    return {"blocks": blocks, "embedding": rows * hidden, "total": blocks + rows * hidden}


def candidate_presets(budget: Budget, target: TargetInfo, arch: str, rows: int) -> list[str]:
    """The budget's presets from the preferred (largest under the size rule) down to the smallest."""
    by_size = sorted(budget.settings["presets"], key=lambda p: preset_params(p, arch, rows)["blocks"])
    fitting = [p for p in by_size if preset_params(p, arch, rows)["blocks"] <= DRAFT_SHARE_OF_TARGET * target.params]
    preferred = fitting[-1] if fitting else by_size[0]
    return list(reversed(by_size[: by_size.index(preferred) + 1]))


# ---------------------------------------------------------------- the plan

def choose_vocabulary(target: TargetInfo, cap: int, recorded: int | None = None, recorded_sizes: bool = False) -> int | None:
    """None: the target's full vocabulary; N: the N most frequent corpus tokens (+1 unknown row, tied).

    A recipe's recorded size is used as it is at the recipe's budget, and capped by any other budget's."""
    size = recorded if recorded and recorded_sizes else min(cap, recorded or cap)
    return None if target.vocab_size <= size else size


def kd_jobs(target: TargetInfo, budget: Budget, recipe: dict | None, prompt_overrides: dict[str, str]) -> list[dict]:
    """One generation job per task: code always; summarization and chat when the target has a chat template."""
    if recipe and recipe.get("kd"):
        jobs = copy.deepcopy(recipe["kd"])
    else:
        jobs = [{"task": "code", "prompts": "humaneval", "eval_fraction": 0.2}]
        if target.chat_template:
            chat_count = budget.settings["kd"]["max_chat_prompts"]
            jobs += [{"task": "summarization", "prompts": "summarize-sotu", "eval_fraction": 0.2},
                     {"task": "chat", "prompts": f"sharegpt:{chat_count}", "eval_fraction": 0.0}]
    for job in jobs:
        if job["task"] in prompt_overrides:
            job["prompts"] = prompt_overrides[job["task"]]
    unknown = set(prompt_overrides) - {job["task"] for job in jobs}
    if unknown:
        raise BuildRefused(f"--prompts {', '.join(sorted(unknown))}=...: no such task in this plan "
                           f"(tasks: {', '.join(job['task'] for job in jobs)})")
    return jobs


def available_prompts(job: dict) -> int:
    """Train prompts a job can use at most (before --limit)."""
    spec = job["prompts"]
    if spec.startswith("sharegpt:"):
        return int(spec.split(":", 1)[1])
    if spec.startswith("file:"):
        from training.generate import read_jsonl

        total = len(read_jsonl(spec[5:]))
    else:
        total = PROMPT_SET_SIZES.get(spec, 0)
    return int(total * (1 - job["eval_fraction"]))


def size_kd(jobs: list[dict], budget: Budget, generate_seconds: float | None, tokens_per_s: float) -> None:
    """Set each job's `limit`: what the generation share buys, split evenly over the tasks, at most what exists."""
    kd = budget.settings["kd"]
    cap = kd.get("max_prompts_per_task")
    room = {id(job): min(available_prompts(job), cap or math.inf) for job in jobs}
    if kd.get("all_prompts") or generate_seconds is None:
        for job in jobs:
            job["limit"] = int(room[id(job)])
        return
    left = int(generate_seconds * tokens_per_s / kd["max_new_tokens"])
    open_jobs = list(jobs)
    for job in jobs:
        job["limit"] = 0
    while left > 0 and open_jobs:  # even split; what a small task cannot use goes to the others
        share = max(1, left // len(open_jobs))
        for job in list(open_jobs):
            take = min(share, room[id(job)] - job["limit"], left)
            job["limit"] += take
            left -= take
            if job["limit"] >= room[id(job)]:
                open_jobs.remove(job)


def make_plan(target: TargetInfo, budget: Budget, train_speed, target_speed: dict | None, *, name: str,
              recipe: dict | None = None, recipe_sizes: bool = False, world_size: int = 1,
              device: str | None = None, sources: Path | None = None, prompt_overrides: dict | None = None,
              precision: str | None = None) -> dict:
    """The plan (a JSON-able dict) for `target` within `budget`.

    `train_speed(preset, arch, rows)` returns a throughput record ({"tokens_per_s", "measured", "how"}):
    measured here, or the recorded reference. `target_speed`: {"batched_tokens_per_s",
    "single_tokens_per_s"} or None when the target cannot run yet. `recipe_sizes`: use the recipe's
    recorded sizes (steps, batch, prompt counts) as they are, not the budget's."""
    from training.corpus import DEFAULT_SOURCES

    settings = budget.settings
    shares = settings["shares"]
    recipe = recipe or {}
    draft_recipe = recipe.get("draft", {})
    arch = draft_recipe.get("arch") or target.arch
    vocab = choose_vocabulary(target, settings["vocab_cap"], draft_recipe.get("draft_vocab_size"), recipe_sizes)
    rows = vocab + 1 if vocab else target.vocab_size
    # preset: recorded, or the largest that fits the target and that the budget can pretrain enough
    minimum = settings.get("minimum", {})
    pretrain_settings = settings["pretrain"]
    pretrain_seconds = shares["pretrain"] * budget.seconds
    if recipe_sizes and draft_recipe.get("preset"):
        candidates = [draft_recipe["preset"]]
    elif draft_recipe.get("preset") in settings["presets"]:
        candidates = [draft_recipe["preset"]]
    else:
        candidates = candidate_presets(budget, target, arch, rows)
    speeds = {}
    for preset in candidates:
        speeds[preset] = train_speed(preset, arch, rows)
        if pretrain_seconds * speeds[preset]["tokens_per_s"] * world_size >= minimum.get("pretrain_tokens", 0):
            break
    speed = speeds[preset]  # the last tried: the smallest when none reached the minimum (refused below)
    tokens_per_s = speed["tokens_per_s"] * world_size
    params = preset_params(preset, arch, rows)
    hidden = _preset_hidden(preset)
    embed_init = draft_recipe.get("embed_init") or ("svd" if target.hf_dir and hidden <= target.hidden_size else "random")
    if embed_init == "svd" and not (target.hf_dir and hidden <= target.hidden_size):
        embed_init = "random"  # the recorded init needs the target's weights on disk, at least as wide
    # corpora and pretraining stages
    corpora = recipe.get("corpora") or {"main": {"only": settings["corpus"]["only"]}}
    stages = copy.deepcopy(recipe.get("pretrain")) or [
        {"name": "pretrain-nl", "corpus": "main", "stage": "nl"},
        {"name": "pretrain-code-nl", "corpus": "main", "stage": "code-nl"}]
    nl_fraction = pretrain_settings["nl_fraction"]
    fractions = [stage.pop("fraction", (nl_fraction if index == 0 else (1 - nl_fraction) / (len(stages) - 1))
                           if len(stages) > 1 else 1.0) for index, stage in enumerate(stages)]
    sized = [not (recipe_sizes and "steps" in stage) for stage in stages]  # the others keep their recorded steps
    for stage in stages:
        stage.setdefault("lr", pretrain_settings["lr"])
        stage.setdefault("bf16", pretrain_settings["bf16"])
        stage["checkpoint_every"] = stage.get("checkpoint_every") or pretrain_settings["checkpoint_every"]
    size_pretraining(stages, fractions, sized, pretrain_seconds, tokens_per_s, pretrain_settings)
    # KD data: one generation job per task
    kd_settings = settings["kd"]
    jobs = kd_jobs(target, budget, recipe, prompt_overrides or {})
    # a target not exported yet (a --plan of an HF folder) cannot be timed: its KD share is sized at a guess
    batched = target_speed["batched_tokens_per_s"] if target_speed else UNMEASURED_TARGET_TOKENS_PER_S
    generate_seconds = shares["generate"] * budget.seconds if "generate" in shares else None
    if not (recipe_sizes and all("limit" in job for job in jobs)):
        size_kd(jobs, budget, generate_seconds, batched)
    kd = {**{k: kd_settings[k] for k in ("max_new_tokens", "batch_size")},
          **(recipe.get("kd_settings", {}) if recipe_sizes else {}), "jobs": jobs}
    kd_prompts = sum(job["limit"] for job in jobs)
    kd_tokens = kd_prompts * kd["max_new_tokens"]
    # alignment: the align share at the measured speed, at most max_passes over the KD examples
    align_settings = merge(settings["align"], recipe.get("align", {}) if recipe_sizes else
                           {k: v for k, v in recipe.get("align", {}).items() if k in ("lr", "bf16")})
    if not (recipe_sizes and "steps" in recipe.get("align", {})):
        rows_per_step = align_settings["batch_size"]
        affordable = int(shares["align"] * budget.seconds * tokens_per_s / (rows_per_step * align_settings["seq_len"]))
        passes = int(align_settings["max_passes"] * kd_prompts / rows_per_step)
        align_settings["steps"] = max(1, min(affordable, passes, align_settings.get("max_steps", affordable)))
    align_settings.pop("max_passes", None)
    align_settings.pop("max_steps", None)
    evaluation = merge(settings["eval"], recipe.get("eval", {}) if recipe_sizes else {})
    evaluation["precision"] = precision
    if "evaluate" in shares and target_speed and not recipe_sizes:  # as many held-out prompts as its share buys
        per_prompt = 2 * len(evaluation["ks"]) * len(jobs) * evaluation["max_new_tokens"] / target_speed["single_tokens_per_s"]
        affordable = int(shares["evaluate"] * budget.seconds / per_prompt)
        evaluation["prompts_per_task"] = max(1, min(evaluation["prompts_per_task"], affordable))
    plan = {
        "format": PLAN_FORMAT, "version": 1, "name": name,
        "target": target.describe(),
        "budget": {"name": budget.name, "family": budget.family, "seconds": budget.seconds, "smoke": budget.smoke,
                   "device": device or budget.device, "world_size": world_size},
        "recipe": recipe.get("path"), "recipe_sizes": recipe_sizes,
        "draft": {"preset": preset, "arch": arch, "draft_vocab_size": vocab, "reduce_input": vocab is not None,
                  "embed_init": embed_init, "params": params, "hidden_size": hidden},
        "corpus": {"sources": str(sources or DEFAULT_SOURCES), "corpora": corpora,
                   "vocab_corpus": recipe.get("vocab_corpus", stages[0]["corpus"]),
                   "estimate_s": settings["corpus"]["estimate_s"]},
        "pretrain": stages,
        "kd": kd,
        "align": align_settings,
        "eval": evaluation,
        "publish": {"dir": str(publish_dir(name)), "files": recipe.get("publish_files")},
        "calibration": {"training": {k: v for p, s in speeds.items() if p == preset for k, v in s.items()},
                        "target": target_speed},
    }
    plan["estimate"] = estimate(plan, tokens_per_s, target_speed)
    # the time the other stages cannot use (too few prompts to generate for, KD data to align on) pretrains
    spent = plan["estimate"]["total_s"] if budget.family == "cpu" else plan["estimate"]["training_device_s"]
    if any(sized) and target_speed and budget.seconds - spent > 0:
        pretraining = sum(s["steps"] * s["batch_size"] * s["seq_len"] for s in stages) / tokens_per_s
        size_pretraining(stages, fractions, sized, pretraining + budget.seconds - spent, tokens_per_s, pretrain_settings)
        plan["estimate"] = estimate(plan, tokens_per_s, target_speed)
    plan["refused"] = usefulness_problem(plan, budget, tokens_per_s, kd_tokens, speeds)
    return plan


def size_pretraining(stages: list[dict], fractions: list[float], sized: list[bool], seconds: float,
                     tokens_per_s: float, settings: dict) -> None:
    """Steps of each stage to be sized: its fraction of `seconds` at `tokens_per_s`, at most the budget's cap."""
    for stage, fraction, resize in zip(stages, fractions, sized):
        if resize:
            stage["batch_size"], stage["seq_len"] = settings["batch_size"], settings["seq_len"]
            steps = int(fraction * seconds * tokens_per_s / (stage["batch_size"] * stage["seq_len"]))
            stage["steps"] = max(1, min(steps, settings.get("max_steps", steps)))
        # a stage cut to fewer steps than its recipe's still checkpoints before its end
        stage["checkpoint_every"] = max(1, min(stage["checkpoint_every"], stage["steps"] // 4))


def _preset_hidden(preset: str) -> int:
    from training.presets import from_name

    return from_name(preset).hidden_size


def estimate(plan: dict, tokens_per_s: float, target_speed: dict | None) -> dict:
    """Seconds per stage: training from the measured tokens/s, generation and evaluation from the target's."""
    seconds = {"corpus": plan["corpus"]["estimate_s"]}
    for stage in plan["pretrain"]:
        seconds[stage["name"]] = stage["steps"] * stage["batch_size"] * stage["seq_len"] / tokens_per_s
    kd, evaluation = plan["kd"], plan["eval"]
    tasks = len(kd["jobs"])
    if target_speed:
        seconds["generate"] = sum(job["limit"] for job in kd["jobs"]) * kd["max_new_tokens"] / target_speed["batched_tokens_per_s"]
        # per k: every prompt decoded plainly and speculatively (the speculative run counted as long as the plain one)
        seconds["evaluate"] = (len(evaluation["ks"]) * tasks * evaluation["prompts_per_task"] * evaluation["max_new_tokens"]
                               * 2 / target_speed["single_tokens_per_s"])
    else:
        seconds["generate"] = seconds["evaluate"] = None
    align = plan["align"]
    seconds["align"] = align["steps"] * align["batch_size"] * align["seq_len"] / tokens_per_s + 30  # + the int8 export
    known = [s for s in seconds.values() if s is not None]
    training = sum(seconds[s["name"]] for s in plan["pretrain"]) + seconds["align"]
    return {"seconds": {k: round(v, 1) if v is not None else None for k, v in seconds.items()},
            "total_s": round(sum(known), 1), "training_device_s": round(training, 1),
            "host_s": round(sum(known) - training, 1)}


def usefulness_problem(plan: dict, budget: Budget, tokens_per_s: float, kd_tokens: int, speeds: dict) -> str | None:
    """Why the budget is too small to train anything useful and what it would take; None when it is not."""
    if budget.smoke or plan["recipe_sizes"]:
        return None
    minimum, shares = budget.settings.get("minimum", {}), budget.settings["shares"]
    pretrain_tokens = sum(s["steps"] * s["batch_size"] * s["seq_len"] for s in plan["pretrain"])
    problems, needed = [], [budget.seconds]
    if pretrain_tokens < minimum.get("pretrain_tokens", 0):
        seconds = minimum["pretrain_tokens"] / tokens_per_s
        needed.append(seconds / shares["pretrain"])
        problems.append(f"pretraining {plan['draft']['preset']} needs at least {minimum['pretrain_tokens'] / 1e6:.1f}M "
                        f"tokens, {seconds / 60:.0f} min at the {tokens_per_s:,.0f} tokens/s measured here "
                        f"({speeds[plan['draft']['preset']]['how']}); this budget gives {pretrain_tokens / 1e6:.2f}M")
    target = plan["calibration"]["target"]
    if target and kd_tokens < minimum.get("kd_output_tokens", 0) and "generate" in shares:
        seconds = minimum["kd_output_tokens"] / target["batched_tokens_per_s"]
        needed.append(seconds / shares["generate"])
        problems.append(f"KD data needs at least {minimum['kd_output_tokens']:,} target tokens, {seconds / 60:.0f} min "
                        f"at the target's {target['batched_tokens_per_s']:.1f} tokens/s measured here; this budget "
                        f"gives {kd_tokens:,}")
    if plan["align"]["steps"] < minimum.get("align_steps", 0):
        problems.append(f"alignment needs at least {minimum['align_steps']} steps, this budget gives "
                        f"{plan['align']['steps']}")
    if not problems:
        return None
    need = max(needed)
    suggestion = f"{budget.family}-{math.ceil(need / 60)}m" if need < 3 * 3600 else f"{budget.family}-{math.ceil(need / 3600)}h"
    return (f"--budget {budget.name} is too small to train a useful draft for {plan['target']['name']}: "
            + "; ".join(problems) + f". It would need about --budget {suggestion}"
            + (" (or a GPU budget)" if budget.family == "cpu" else "") + ".")


# ---------------------------------------------------------------- printing

def millions(count: float) -> str:
    return f"{count / 1e6:.2f}M" if count < 1e8 else f"{count / 1e6:,.0f}M"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not estimated"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def format_plan(plan: dict) -> str:
    from fastdraft.machine import describe_cpu

    target, draft, budget = plan["target"], plan["draft"], plan["budget"]
    training, generation = plan["calibration"]["training"], plan["calibration"]["target"]
    seconds = plan["estimate"]["seconds"]
    params = draft["params"]
    vocabulary = (f"the {draft['draft_vocab_size']:,} most frequent corpus tokens + 1 unknown row, tied"
                  if draft["reduce_input"] else f"the target's {target['vocab_size']:,} tokens, tied")
    lines = [
        f"plan: draft {plan['name']!r} for {target['name']} (budget {budget['name']}: "
        f"{_minutes(budget['seconds'])} of {'this CPU' if budget['family'] == 'cpu' else 'CUDA training'}"
        f"{', smoke run' if budget['smoke'] else ''}{', recipe ' + str(plan['recipe']) if plan['recipe'] else ''})",
        f"machine: {describe_cpu()}; training device {budget['device']} x {budget['world_size']}",
        f"target: {target['model_type']}, {millions(target['params'])} params, {target['vocab_size']:,}-token vocabulary, "
        f"chat template: {'yes' if target['chat_template'] else 'no'}"
        + (f", int8 IR {target['weight_bytes'] / 1e6:.0f} MB" if target["weight_bytes"] else ", not exported yet"),
        f"draft: {draft['preset']} ({draft['arch']}, hidden {draft['hidden_size']}), vocabulary: {vocabulary}; "
        f"{millions(params['total'])} params ({millions(params['embedding'])} embedding, {millions(params['blocks'])} "
        f"blocks = {params['blocks'] / target['params']:.1%} of the target's params); embeddings: {draft['embed_init']}",
        f"calibration: training {training['tokens_per_s']:,.0f} tokens/s ({training['how']}"
        + (f", {training['batch_size']} x {training['seq_len']}" if training.get("measured") else "") + "); target "
        + (f"{generation['batched_tokens_per_s']:.1f} tokens/s with {generation['batch_size']} at once, "
           f"{generation['single_tokens_per_s']:.1f} alone (our engine)" if generation else
           f"not measured (not exported yet): KD sized for {UNMEASURED_TARGET_TOKENS_PER_S:g} tokens/s"),
        "stages:",
        f"  {'target':<18} prepare {target['spec']}",
        f"  {'corpus':<18} {_corpora(plan)}  ~{_minutes(seconds['corpus'])} + downloads",
        f"  {'vocab':<18} " + (f"{draft['draft_vocab_size']:,} most frequent tokens of corpus {plan['corpus']['vocab_corpus']!r}"
                               if draft["reduce_input"] else "the target's own (nothing to select)"),
    ]
    for stage in plan["pretrain"]:
        tokens = stage["steps"] * stage["batch_size"] * stage["seq_len"]
        lines.append(f"  {stage['name']:<18} {stage['steps']:,} steps x {stage['batch_size']} x {stage['seq_len']} = "
                     f"{millions(tokens)} tokens, mix {stage['stage']!r} of corpus {stage['corpus']!r}, lr {stage['lr']:g}"
                     f"  ~{_minutes(seconds[stage['name']])}")
    kd = plan["kd"]
    jobs = ", ".join(f"{job['task']} {job['limit']} ({job['prompts']})" for job in kd["jobs"])
    lines.append(f"  {'generate':<18} {jobs} prompts x {kd['max_new_tokens']} tokens by the target (our engine, "
                 f"{kd['batch_size']} at once)  ~{_minutes(seconds['generate'])}")
    align = plan["align"]
    lines.append(f"  {'align':<18} {align['steps']:,} steps x {align['batch_size']} x {align['seq_len']}, lr {align['lr']:g}, "
                 f"then the int8 IR  ~{_minutes(seconds['align'])}")
    evaluation = plan["eval"]
    lines.append(f"  {'evaluate':<18} k = {', '.join(map(str, evaluation['ks']))}: {evaluation['prompts_per_task']} held-out "
                 f"prompts per task x {evaluation['max_new_tokens']} tokens, plain vs speculative  "
                 f"~{_minutes(seconds['evaluate'])}")
    lines.append(f"  {'summary, publish':<18} summary.json/.png, model card -> {plan['publish']['dir']}")
    total = plan["estimate"]
    if budget["family"] == "cpu":
        lines.append(f"estimate: {_minutes(total['total_s'])} in all (budget {_minutes(budget['seconds'])})")
    else:
        lines.append(f"estimate: {_minutes(total['training_device_s'])} of training on {budget['device']} "
                     f"(budget {_minutes(budget['seconds'])}), {_minutes(total['host_s'])} on this CPU beside it")
    return "\n".join(lines)


def _corpora(plan: dict) -> str:
    parts = []
    for name, corpus in plan["corpus"]["corpora"].items():
        if corpus.get("only"):
            parts.append(f"{name!r}: {len(corpus['only'])} sources ({', '.join(corpus['only'][:4])}"
                         f"{', ...' if len(corpus['only']) > 4 else ''})")
        elif corpus.get("exclude"):
            parts.append(f"{name!r}: every source but {', '.join(corpus['exclude'])}")
        else:
            parts.append(f"{name!r}: every source of {Path(plan['corpus']['sources']).name}")
    return "; ".join(parts)
