"""`python -m training.build`: the plan per budget and target, the early refusals, a kill in every long stage
followed by a rerun that skips what was done and resumes what was not, and the shipped draft's recipe end
to end on the tiny fixture target, ending in a draft the engine loads by name.

Fixtures: the tiny fixture tokenizer and random Qwen2 target of training/fixtures.py (its HF folder is the
target, exported once per session into a temporary $FASTDRAFT_HOME), stand-in corpus sources cut from the
fixture texts, and local prompt files (no network). The plan tests also read the real configs of
smollm2-135m-instruct and qwen2.5-coder-1.5b-instruct from the model cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from training import build, build_plan, build_stages, build_target, fixtures, generate
from training.build_target import BuildRefused

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "recipes" / "fastdraft-qwen2.5-coder-1.5b.json"
REAL_HOME = Path(os.environ.get("FASTDRAFT_HOME", "~/.cache/fastdraft")).expanduser()
# the recipe's source names, cut from the fixture texts ('first' = the first six, 'second' = all but four of them),
# and one more code source of large stdlib modules in 'second'. All local folders: no download
STAND_IN_SOURCES = {"shakespeare": ("nl", "prose/doc0[0-3].txt"), "sotu": ("nl", "prose/doc0[4-7].txt"),
                    "brown": ("nl", "prose/doc*[89].txt"), "python-stdlib": ("code", "code/textwrap.py"),
                    "numpy": ("code", "code/shlex.py"), "requests": ("code", "code/colorsys.py"),
                    "django": ("code", "code/bisect.py")}
# the largest stdlib modules, so tokenizing the last source takes long enough to be killed in
HEAVY_MODULES = ["typing.py", "inspect.py", "argparse.py", "pydoc.py", "tarfile.py", "subprocess.py", "os.py",
                 "zipfile.py", "ssl.py", "doctest.py", "pickle.py", "functools.py"]


def messages_prompts(task: str, texts: list[str]) -> list[dict]:
    return [{"id": f"{task}-{i}", "task": task, "messages": [{"role": "user", "content": text}]}
            for i, text in enumerate(texts)]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    patch = pytest.MonkeyPatch()
    patch.setenv("FASTDRAFT_HOME", str(root / "home"))
    fixtures.write_sources(root)
    fixtures.make_tokenizer(root / "tokenizer")
    fixtures.make_target(root / "target-hf", root / "tokenizer")
    from models.resolve import resolve_model

    resolve_model(str(root / "target-hf"))  # the int8 export, once: every build below finds it in the cache
    stand_in = {"sources": [{"name": name, "kind": "dir", "path": str(root / "sources"), "version": "1",
                             "include": [pattern], "domain": domain, "cleaner": "text" if domain == "nl" else "code"}
                            for name, (domain, pattern) in STAND_IN_SOURCES.items()],
                "stages": {"nl": {"nl": 1.0}, "code-nl": {"code": 0.7, "nl": 0.3}}}
    # a source large enough that tokenizing it takes a while: the corpus stage can be killed inside it
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    (root / "sources" / "heavy").mkdir()
    for name in HEAVY_MODULES:
        shutil.copy2(stdlib / name, root / "sources" / "heavy" / name)
    stand_in["sources"].append({"name": "heavy", "kind": "dir", "path": str(root / "sources"), "version": "1",
                                "include": ["heavy/*.py"], "domain": "code", "cleaner": "code"})
    (root / "stand-in-sources.json").write_text(json.dumps(stand_in))
    prose = [f"{i}. {text}" for i in range(4) for text in fixtures.PROSE]  # 16 prompts: some land in the held-out split
    for task, texts in (("chat", [f"Tell me about this: {p[:60]}" for p in prose]),
                        ("summarization", [f"Summarize the following text in three sentences.\n\n{p}" for p in prose])):
        rows = messages_prompts(task, texts)
        assert any(generate.is_eval(r["id"], 0.2) for r in rows)
        (root / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    yield root
    patch.undo()


def run_build(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.build", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=600, **kwargs)


# ---------------------------------------------------------------- the plan

def fixed_speed(tokens_per_s: float):
    def speed(preset, arch, rows):
        return {"tokens_per_s": tokens_per_s, "measured": True, "how": "fixed in the test", "preset": preset}
    return speed


TARGET_SPEED = {"batched_tokens_per_s": 40.0, "single_tokens_per_s": 10.0, "batch_size": 8, "measured": True}


def real_target(name: str, monkeypatch) -> build_target.TargetInfo:
    if not (REAL_HOME / "models" / name / "ir-int8" / "openvino_model.xml").exists():
        pytest.skip(f"{name} is not prepared in {REAL_HOME} (fastdraft models pull {name})")
    monkeypatch.setenv("FASTDRAFT_HOME", str(REAL_HOME))
    return build_target.read_target(name, prepare=False)


def plan_for(target, budget: str, tokens_per_s: float = 1000.0, name: str = "d", **kwargs) -> dict:
    return build_plan.make_plan(target, build_plan.load_budget(budget), fixed_speed(tokens_per_s), TARGET_SPEED,
                                name=name, **kwargs)


def test_plan_for_smollm2_on_cpu_budgets(monkeypatch):
    target = real_target("smollm2-135m-instruct", monkeypatch)
    assert target.arch == "llama" and target.vocab_size == 49152 and target.chat_template
    one_hour, four_hours = plan_for(target, "cpu-1h"), plan_for(target, "cpu-4h")
    for plan in (one_hour, four_hours):
        # a small Llama target: the 4-layer 256-wide preset in its architecture, 16,384 tied rows of 49,152
        assert plan["draft"] == {**plan["draft"], "preset": "draft-12m", "arch": "llama", "draft_vocab_size": 16384,
                                 "reduce_input": True, "embed_init": "svd"}
        assert [s["stage"] for s in plan["pretrain"]] == ["nl", "code-nl"]
        assert [job["task"] for job in plan["kd"]["jobs"]] == ["code", "summarization", "chat"]
        # the whole budget is planned: what generation, alignment and evaluation cannot use pretrains
        assert 0.97 * plan["budget"]["seconds"] <= plan["estimate"]["total_s"] <= plan["budget"]["seconds"]
        nl, code = (s["steps"] for s in plan["pretrain"])
        assert nl / (nl + code) == pytest.approx(0.3, abs=0.01)  # FastDraft's NL stage first: 30% of the tokens
        assert plan["refused"] is None
    # pretraining gets at least 40% of the hour at 1,000 tokens/s (1.44M tokens in 8 x 256 rows)
    assert sum(s["steps"] for s in one_hour["pretrain"]) * 8 * 256 >= 0.4 * 3600 * 1000 - 2 * 8 * 256
    kd_one, kd_four = ({j["task"]: j["limit"] for j in p["kd"]["jobs"]} for p in (one_hour, four_hours))
    assert sum(kd_one.values()) * 128 <= 0.30 * 3600 * TARGET_SPEED["batched_tokens_per_s"]
    assert max(kd_one.values()) - min(kd_one.values()) <= 1  # the generation share split evenly over the tasks
    # four times the budget: every train prompt (HumanEval's 131), and the rest of the time pretrains
    assert kd_four == {"code": 131, "summarization": 186, "chat": 200}
    assert sum(s["steps"] for s in four_hours["pretrain"]) > 4 * sum(s["steps"] for s in one_hour["pretrain"])


def test_plan_for_qwen_per_budget(monkeypatch):
    target = real_target("qwen2.5-coder-1.5b-instruct", monkeypatch)
    assert target.arch == "qwen2" and target.vocab_size == 151936
    plans = {budget: plan_for(target, budget, tokens_per_s=1000.0 if budget.startswith("cpu") else 452000.0)
             for budget in ("cpu-1h", "gpu-15m", "gpu-2h")}
    assert {b: (p["draft"]["preset"], p["draft"]["draft_vocab_size"]) for b, p in plans.items()} == {
        "cpu-1h": ("draft-12m", 16384), "gpu-15m": ("draft-50m", 30720), "gpu-2h": ("draft-150m", 30720)}
    gpu = plans["gpu-15m"]
    assert gpu["budget"]["device"] == "cuda" and gpu["pretrain"][0]["batch_size"] == 64
    # GPU budgets spend the training device's time; the CPU-side generation uses every train prompt
    assert gpu["estimate"]["training_device_s"] <= 900 and gpu["estimate"]["host_s"] > 900
    assert {j["task"]: j["limit"] for j in gpu["kd"]["jobs"]} == {"code": 131, "summarization": 186, "chat": 96}


def test_plan_of_the_shipped_recipe_is_its_record(monkeypatch):
    target = real_target("qwen2.5-coder-1.5b-instruct", monkeypatch)
    recipe = build_plan.load_recipe(RECIPE)
    plan = plan_for(target, "gpu-15m", tokens_per_s=452000.0, name=recipe["name"], recipe=recipe, recipe_sizes=True)
    assert plan["draft"]["preset"] == "draft-50m" and plan["draft"]["draft_vocab_size"] == 30720
    assert [(s["name"], s["corpus"], s["steps"], s["lr"]) for s in plan["pretrain"]] == [
        ("pretrain-1", "first", 2000, 1e-3), ("pretrain-2", "second", 1605, 6e-4)]
    assert (plan["align"]["steps"], plan["align"]["batch_size"], plan["align"]["seq_len"]) == (110, 8, 384)
    assert {j["task"]: j["limit"] for j in plan["kd"]["jobs"]} == {"code": 132, "summarization": 188, "chat": 96}
    assert plan["kd"]["max_new_tokens"] == 160
    assert plan["publish"]["dir"] == str(REPO / "models" / "drafts" / "fastdraft-qwen2.5-coder-1.5b")
    # the same structure at another budget takes that budget's sizes
    small = plan_for(target, "cpu-1h", recipe=recipe)
    assert small["draft"]["preset"] == "draft-12m" and small["draft"]["draft_vocab_size"] == 16384
    assert [s["name"] for s in small["pretrain"]] == ["pretrain-1", "pretrain-2"]
    assert small["pretrain"][0]["batch_size"] == 8 and small["pretrain"][0]["steps"] < 2000


def test_plan_for_the_fixture_target(world):
    target = build_target.read_target(str(world / "target-hf"), prepare=False)
    plan = plan_for(target, "tiny", tokens_per_s=5000.0)
    assert plan["draft"]["preset"] == "tiny" and plan["draft"]["draft_vocab_size"] == 256
    assert all(s["steps"] == 30 for s in plan["pretrain"])  # the tiny budget's cap
    assert all(job["limit"] == 4 for job in plan["kd"]["jobs"])
    # a target with the fixture's 400 tokens fits a CPU budget's vocabulary whole
    assert plan_for(target, "cpu-4h")["draft"]["draft_vocab_size"] is None
    # without a chat template only code prompts make sense (no messages to format)
    plain = build_target.TargetInfo(**{**target.__dict__, "chat_template": False})
    assert [job["task"] for job in plan_for(plain, "tiny")["kd"]["jobs"]] == ["code"]


def test_budget_too_small_is_refused_with_what_it_would_need(monkeypatch):
    target = real_target("smollm2-135m-instruct", monkeypatch)
    assert re.search(r"--budget cpu-10m is too small.*0\.5M tokens, 8 min at the 1,000 tokens/s.*"
                     r"would need about --budget cpu-21m", plan_for(target, "cpu-10m")["refused"])
    assert plan_for(target, "cpu-1h")["refused"] is None
    with pytest.raises(BuildRefused, match="--budget must be one of"):
        build_plan.load_budget("cpu-ten-minutes")


def test_plan_is_printed_and_nothing_runs(world, tmp_path, capsys):
    assert build.main(["--target", str(world / "target-hf"), "--budget", "tiny", "--out", str(tmp_path / "run"),
                       "--sources", str(world / "sources.json"), "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "calibration: training" in printed and "tokens/s" in printed
    for stage in ("corpus", "vocab", "pretrain-nl", "pretrain-code-nl", "generate", "align", "evaluate", "estimate:"):
        assert stage in printed
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- refusals

def test_target_without_tokenizer_is_refused_before_anything_runs(world, tmp_path):
    bare = tmp_path / "bare-target"
    shutil.copytree(world / "target-hf", bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    models_before = sorted(p.name for p in (world / "home" / "models").iterdir())
    with pytest.raises(BuildRefused, match=r"target .*bare-target.* has no usable tokenizer: .*tokenizer.json"):
        build.main(["--target", str(bare), "--budget", "tiny", "--out", str(tmp_path / "run")])
    assert sorted(p.name for p in (world / "home" / "models").iterdir()) == models_before  # nothing exported
    assert not (tmp_path / "run").exists()


def test_existing_draft_name_is_refused_without_force(world, tmp_path):
    taken = world / "home" / "drafts" / "taken-name"
    taken.mkdir(parents=True)
    (taken / "openvino_model.xml").write_text("<net/>")
    argv = ["--target", str(world / "target-hf"), "--budget", "tiny", "--name", "taken-name", "--out", str(tmp_path / "run"),
            "--sources", str(world / "sources.json")]
    with pytest.raises(BuildRefused, match=r"a draft named 'taken-name' exists .*pass --force"):
        build.main(argv)
    assert not (tmp_path / "run").exists()
    with pytest.raises(BuildRefused, match="is a catalog model"):
        build.main([*argv[:4], "--name", "smollm2-135m-instruct", *argv[6:]])
    shutil.rmtree(taken)


# ---------------------------------------------------------------- the shipped recipe: killed in every stage, then done

def start_build(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "training.build", *argv], cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_when(process: subprocess.Popen, condition, what: str, deadline_s: float = 300) -> None:
    """SIGKILL the build and its children (its process group) as soon as `condition()` holds."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert process.poll() is None, f"the build ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {deadline_s} s"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def record(out: Path, stage: str) -> dict:
    return json.loads((out / "stages" / f"{stage}.json").read_text())["record"]


STAGES = ["corpus", "vocab", "pretrain-1", "pretrain-2", "generate", "align", "evaluate", "summary", "publish"]


def test_shipped_recipe_killed_in_each_stage_resumes_and_publishes_a_draft_the_engine_loads(world, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--recipe", str(RECIPE), "--budget", "tiny", "--target", str(world / "target-hf"), "--name", "fixture-draft",
            "--sources", str(world / "stand-in-sources.json"), "--corpus-cache", str(tmp_path / "cache"),
            "--prompts", f"chat=file:{world / 'chat.jsonl'}", "--prompts", f"summarization=file:{world / 'summarization.jsonl'}",
            "--precision", "f32", "--threads", "1", "--out", str(out)]
    # each kill lands inside its stage: the stage's own partial output exists, its record does not
    kills = [
        ("corpus", lambda: (out / "corpus-first" / "manifest.json").exists()),  # the second corpus is being built
        ("pretrain-1", lambda: (out / "pretrain-1" / "checkpoints" / "latest").exists()),
        ("pretrain-2", lambda: (out / "pretrain-2" / "checkpoints" / "latest").exists()),
        ("generate", lambda: build_stages.count_lines(out / "kd" / "generations.jsonl") >= 2),  # 12 prompts, 2 at a time
        ("align", lambda: (out / "align" / "checkpoints" / "latest").exists()),
        ("evaluate", lambda: (out / "eval" / "k2" / "evaluation.json").exists()),  # k = 3 runs
    ]
    for number, (stage, condition) in enumerate(kills):
        log = tmp_path / f"run-{number}.log"
        kill_when(start_build(argv, log), condition, f"partial output of {stage}")
        assert not (out / "stages" / f"{stage}.json").exists(), f"{stage} finished before the kill"
        if number:  # the stage the previous kill interrupted finished in this run; the ones before it were skipped
            text, previous = log.read_text(), kills[number - 1][0]
            assert f"{previous}: done in" in text, text[-3000:]
            for earlier in STAGES[: STAGES.index(previous)]:
                assert f"{earlier}: done (" in text, (earlier, text[-3000:])
    completed = run_build(*argv)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "evaluate: started" in completed.stdout and "align: done (" in completed.stdout
    # what each interrupted stage resumed from
    corpus = record(out, "corpus")
    assert corpus["first"]["resumed_sources"] == corpus["first"]["sources"] == [
        "shakespeare", "sotu", "brown", "python-stdlib", "numpy", "requests"]
    assert corpus["second"]["sources"] == ["sotu", "brown", "django", "heavy"]
    for stage in ("pretrain-1", "pretrain-2", "align"):
        assert 5 <= record(out, stage)["resumed_from_step"] <= record(out, stage)["steps"], stage
    generated = record(out, "generate")
    assert generated["resumed_with"] >= 2 and generated["generations"] == 12
    assert generated["tasks"] == {"code": 4, "summarization": 4, "chat": 4}
    assert record(out, "evaluate")["k2"] == {"resumed": True} and "alpha" in record(out, "evaluate")["k3"]
    steps = [json.loads(line)["step"] for line in (out / "pretrain-1" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, record(out, "pretrain-1")["steps"] + 1))  # every step once, across the kill
    # the recipe's structure at the tiny budget's sizes
    plan = json.loads((out / "plan.json").read_text())
    assert [s["name"] for s in plan["pretrain"]] == ["pretrain-1", "pretrain-2"]
    assert plan["draft"]["preset"] == "tiny" and record(out, "vocab")["draft_vocab_size"] == 256
    # the summary: acceptance per position per task and speedup per k; the PNG; the filled model card
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["evaluation"]["tasks"]) == {"code", "chat", "summarization"}
    for by_k in summary["evaluation"]["tasks"].values():
        assert [len(by_k[k]["acceptance_per_position"]) for k in ("2", "3")] == [2, 3]
        assert by_k["3"]["wall_clock_speedup"] > 0
        assert by_k["3"]["identical_outputs"] == by_k["3"]["prompts"] > 0  # greedy at f32: exact
    assert summary["command"].startswith("python -m training.build --recipe")
    assert (out / "summary.png").stat().st_size > 5000
    card = (out / "model_card.md").read_text()
    assert "# fixture-draft" in card and "| code (" in card and "$" not in card.replace("$FASTDRAFT_HOME", "")
    # published where --draft NAME finds it: the recipe's files, the card and the summary
    from models.home import draft_dir
    from models.resolve import resolve_model

    published = draft_dir("fixture-draft")
    assert sorted(p.name for p in published.iterdir()) == sorted(
        ["openvino_model.xml", "openvino_model.bin", "config.json", "generation_config.json", "draft_vocab_map.json",
         "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "README.md", "summary.json", "summary.png",
         "fastdraft_build.json"])
    draft = resolve_model("fixture-draft")
    assert draft.ir_dir == published and draft.name == "fixture-draft"
    # the engine loads it by name and decodes with it exactly as without it
    from drafting.loader import load_engine
    from drafting.request import GenerationRequest

    engine = load_engine(resolve_model(str(world / "target-hf")), draft, precision="f32", kv_cache_bytes=64 << 20)
    prompt = [5, 17, 42, 99, 120]
    plain = engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=16, speculative=False))
    spec = engine.generate_all(GenerationRequest(prompt_ids=prompt, max_new_tokens=16, num_draft_tokens=3))
    assert spec.token_ids == plain.token_ids and spec.stats.draft_tokens > 0
    from models import cli

    cli.cmd_list(None)
    assert "fixture-draft" in capsys.readouterr().out
    # the same command again does nothing; another plan for the same folder is refused
    assert build.main(argv) == 0
    printed = capsys.readouterr().out
    assert all(f"{stage}: done (" in printed for stage in STAGES), printed
    with pytest.raises(BuildRefused, match=r"was planned with other options \(budget: 'tiny' -> 'cpu-2h'\)"):
        build.main([a if a != "tiny" else "cpu-2h" for a in argv])
