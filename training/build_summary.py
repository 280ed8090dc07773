"""The end of a build: one summary (JSON and PNG) of what every stage did and measured, and the model card.

    <out>/summary.json   plan, machine, command, per-stage time, corpus, vocabulary, losses, KD data, and per
                         task and k: alpha, acceptance per position, mean accepted length, wall-clock speedup
    <out>/summary.png    acceptance per position per task (largest k); wall-clock speedup per k per task
    <out>/model_card.md  training/recipes/model_card.md filled from the summary

Boundary: reads the run folder that training/build.py wrote (plan.json, stages/*.json, eval/k*/evaluation.json,
the draft's IR); writes these three files and nothing else.
"""

from __future__ import annotations

import json
import shlex
import string
from datetime import datetime, timezone
from pathlib import Path

from training.build_plan import RECIPES_DIR, _minutes, millions

CARD_TEMPLATE = RECIPES_DIR / "model_card.md"
SUMMARY_FORMAT = "fastdraft-build-summary"


def build_command(plan: dict, out: Path) -> str:
    """The command that rebuilds this draft (what the plan's request recorded)."""
    request = plan["request"]
    parts = ["python", "-m", "training.build"]
    if request["recipe"]:
        parts += ["--recipe", request["recipe"]]
    for flag in ("target", "budget", "name", "device", "sources", "precision"):
        if request.get(flag):
            parts += [f"--{flag}", str(request[flag])]
    for value in request["prompts"]:
        parts += ["--prompts", value]
    parts += ["--out", str(out)]
    command = " ".join(shlex.quote(p) for p in parts)
    world = request.get("world_size", 1)
    return command.replace("python -m", f"torchrun --nproc-per-node {world} -m", 1) if world > 1 else command


def stage_records(out: Path) -> dict:
    records = {}
    for path in sorted((out / "stages").glob("*.json")):
        data = json.loads(path.read_text())
        records[data["stage"]] = data
    return records


def evaluations(plan: dict, out: Path) -> dict:
    """{"tasks": {task: {k: figures}}, "overall": {k: figures}} from every evaluation.json of the run."""
    tasks: dict[str, dict] = {}
    overall = {}
    for k in plan["eval"]["ks"]:
        path = out / "eval" / f"k{k}" / "evaluation.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        for task, figures in result["tasks"].items():
            tasks.setdefault(task, {})[str(k)] = figures
        overall[str(k)] = result["overall"]
    return {"tasks": tasks, "overall": overall}


def summarize(plan: dict, out: Path) -> dict:
    from fastdraft.machine import describe_cpu

    records = stage_records(out)
    record = {name: data.get("record", {}) for name, data in records.items()}
    ir = out / "align" / "ir" / "openvino_model.bin"
    return {
        "format": SUMMARY_FORMAT, "version": 1, "name": plan["name"],
        "built": datetime.now(timezone.utc).date().isoformat(), "machine": describe_cpu(),
        "command": build_command(plan, out), "target": plan["target"], "budget": plan["budget"], "recipe": plan["recipe"],
        "draft": {**plan["draft"], "ir_bytes": ir.stat().st_size if ir.exists() else None,
                  "coverage": record.get("vocab", {}).get("coverage")},
        "calibration": plan["calibration"],
        "seconds": {name: data["seconds"] for name, data in records.items()},
        "planned_seconds": plan["estimate"]["seconds"],
        "corpus": record.get("corpus"),
        "pretrain": [{**stage, **record.get(stage["name"], {})} for stage in plan["pretrain"]],
        "kd": {"max_new_tokens": plan["kd"]["max_new_tokens"],
               "tasks": {job["task"]: {**job, "generations": record.get("generate", {}).get("tasks", {}).get(job["task"], 0)}
                         for job in plan["kd"]["jobs"]}},
        "align": {**plan["align"], **record.get("align", {})},
        "evaluation": {"max_new_tokens": plan["eval"]["max_new_tokens"], "ks": plan["eval"]["ks"],
                       "prompts_per_task": plan["eval"]["prompts_per_task"], **evaluations(plan, out)},
    }


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluation = summary["evaluation"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    largest = str(max(evaluation["ks"]))
    for task, by_k in evaluation["tasks"].items():
        if largest in by_k:
            rates = by_k[largest]["acceptance_per_position"]
            left.plot(range(1, len(rates) + 1), rates, marker="o", label=task)
        ks = sorted(by_k, key=int)
        right.plot([int(k) for k in ks], [by_k[k]["wall_clock_speedup"] or 0 for k in ks], marker="o", label=task)
    left.set_xticks(range(1, int(largest) + 1))
    left.set(xlabel="draft position", ylabel="acceptance rate", ylim=(0, 1.05),
             title=f"{summary['name']} -> {summary['target']['name']} (k={largest})")
    right.axhline(1.0, color="gray", linewidth=0.5)
    right.set(xlabel="draft length k", ylabel="wall clock vs plain decoding", title="speedup per k (measured)")
    right.set_xticks(evaluation["ks"])
    for axis in (left, right):
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_card(summary: dict) -> str:
    draft, target, budget = summary["draft"], summary["target"], summary["budget"]
    from training.presets import from_name

    cfg = from_name(draft["preset"])
    params = draft["params"]
    vocabulary = (f"{draft['draft_vocab_size'] + 1:,} rows, tied input/output: the {draft['draft_vocab_size']:,} most "
                  f"frequent target tokens of the corpus ({_percent(draft['coverage'])} of its tokens) + one \"unknown\" row "
                  "that every other token reads as and that is never proposed (`draft_vocab_map.json`, input \"draft\")"
                  if draft["reduce_input"] else f"the target's {target['vocab_size']:,} tokens, tied input/output")
    stage_rows = [f"| corpus | {_corpus_line(summary)} | {_minutes(summary['seconds'].get('corpus'))} |"]
    if draft["reduce_input"]:
        stage_rows.append(f"| vocabulary | {draft['draft_vocab_size']:,} most frequent tokens, coverage "
                          f"{_percent(draft['coverage'])} | {_minutes(summary['seconds'].get('vocab'))} |")
    for stage in summary["pretrain"]:
        tokens = stage["steps"] * stage["batch_size"] * stage["seq_len"]
        stage_rows.append(f"| {stage['name']} | `training.pretrain`, mix {stage['stage']} of corpus {stage['corpus']}, "
                          f"{stage['steps']:,} steps x {stage['batch_size']} x {stage['seq_len']} ({millions(tokens)} tokens), "
                          f"lr {stage['lr']:g}, final loss {_loss(stage.get('final_loss'))} | "
                          f"{_minutes(summary['seconds'].get(stage['name']))} |")
    kd = summary["kd"]
    jobs = ", ".join(f"{task} {job.get('generations', 0)} ({job['prompts']})" for task, job in kd["tasks"].items())
    stage_rows.append(f"| KD data | `training.generate`: the target's greedy outputs, {kd['max_new_tokens']} tokens at most, "
                      f"our engine: {jobs} | {_minutes(summary['seconds'].get('generate'))} |")
    align = summary["align"]
    stage_rows.append(f"| align | `training.align`: KD, loss on output tokens only, {align['steps']:,} steps x "
                      f"{align['batch_size']} x {align['seq_len']}, lr {align['lr']:g}, final loss "
                      f"{_loss(align.get('final_loss'))}; int8 IR | {_minutes(summary['seconds'].get('align'))} |")
    stage_rows.append(f"| evaluate | `training.evaluate` at k = {', '.join(map(str, summary['evaluation']['ks']))} | "
                      f"{_minutes(summary['seconds'].get('evaluate'))} |")
    evaluation = summary["evaluation"]
    eval_rows = []
    for task, by_k in list(evaluation["tasks"].items()) + [("overall", evaluation["overall"])]:
        for k in sorted(by_k, key=int):
            f = by_k[k]
            eval_rows.append(f"| {task} ({f['prompts']}) | {k} | {f['alpha']:.3f} | {f['mean_accepted_length']:.2f} | "
                             f"{' '.join(f'{x:.2f}' for x in f['acceptance_per_position'])} | "
                             f"{f['wall_clock_speedup'] or 0:.2f}x | {f['memory_bound_speedup']:.2f} | "
                             f"{f['identical_outputs']}/{f['prompts']} |")
    training = summary["calibration"]["training"]
    generation = summary["calibration"]["target"]
    calibration = (f"training {training['tokens_per_s']:,.0f} tokens/s ({training['how']}); target generation "
                   + (f"{generation['batched_tokens_per_s']:.1f} tokens/s with {generation['batch_size']} at once, "
                      f"{generation['single_tokens_per_s']:.1f} alone" if generation else "not measured"))
    values = {
        "name": summary["name"], "target": target["name"], "target_spec": target["spec"], "date": summary["built"],
        "machine": summary["machine"],
        "draft_line": f"{millions(params['total'])} parameters, {cfg.num_layers} layers, "
                      + (f"{draft['draft_vocab_size']:,}-token tied vocabulary" if draft["reduce_input"]
                         else "the target's vocabulary"),
        "arch": {"qwen2": "Qwen2", "llama": "Llama"}.get(draft["arch"], draft["arch"]), "preset": draft["preset"],
        "shape": f"{cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} query / {cfg.num_kv_heads} KV heads, "
                 f"MLP {cfg.intermediate_size}, RoPE base {cfg.rope_theta:g}; embeddings initialized {draft['embed_init']}",
        "vocabulary": vocabulary,
        "params": f"{millions(params['total'])}: {millions(params['embedding'])} embedding, {millions(params['blocks'])} "
                  f"blocks (target: {millions(target['params'])})",
        "ir_size": f"{draft['ir_bytes'] / 1e6:.1f} MB" if draft.get("ir_bytes") else "-",
        "command": summary["command"], "budget": budget["name"],
        "budget_line": (f"{_minutes(budget['seconds'])} of " + ("this CPU" if budget["family"] == "cpu" else
                        f"training on {budget['device']} x {budget['world_size']}, generation and evaluation on the CPU")
                        + (" (a smoke run: trains nothing useful)" if budget["smoke"] else "")),
        "calibration": calibration, "stage_rows": "\n".join(stage_rows),
        "eval_prompts": f"{evaluation['prompts_per_task']} per task", "eval_tokens": str(evaluation["max_new_tokens"]),
        "eval_rows": "\n".join(eval_rows) or "| - | - | - | - | - | - | - | - |",
    }
    return string.Template(CARD_TEMPLATE.read_text()).substitute(values)


def _percent(value) -> str:
    return f"{value:.1%}" if value is not None else "-"


def _loss(value) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _corpus_line(summary: dict) -> str:
    corpus = summary.get("corpus") or {}
    parts = [f"{name}: {millions(c['tokens'])} tokens of {len(c['sources'])} sources ("
             + ", ".join(f"{d} {millions(t)}" for d, t in c["domains"].items()) + ")" for name, c in corpus.items()]
    return "`training.corpus` with the target's tokenizer; " + "; ".join(parts)


def write_summary(plan: dict, out: Path) -> dict:
    summary = summarize(plan, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, out / "summary.png")
    (out / "model_card.md").write_text(model_card(summary))
    overall = summary["evaluation"]["overall"]
    return {"summary": str(out / "summary.json"),
            "speedup_per_k": {k: figures["wall_clock_speedup"] for k, figures in overall.items()}}
