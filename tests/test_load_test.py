"""scripts/load_test.py run for real on smollm2: our server under load, every greedy output checked against the
same prompt's plain output alone (speculation and batching must leave a greedy output as it was), and the capturing
server's account of what capture cost, and the draft lengths each level chose."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_load_test_counts_outputs_equal_to_their_plain_output_alone(smollm2_fp32, tmp_path):
    out = tmp_path / "load.json"
    command = [sys.executable, str(ROOT / "scripts" / "load_test.py"),
               "--target", "smollm2-135m-instruct", "--target-weight-format", "fp32",
               "--draft", "smollm2-135m-instruct", "--draft-weight-format", "fp32", "--precision", "f32",
               "--configs", "plain,spec,spec-k2,spec+capture", "--concurrency", "1,3", "--repeats", "1",
               "--max-tokens", "16", "--num-prompts", "3", "--task", "code", "--json", str(out)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(out.read_text())
    table = report["table"]
    assert {(row["config"], row["concurrency"]) for row in table} == {
        (config, level) for config in ("plain", "spec", "spec-k2", "spec+capture") for level in (1, 3)}
    for row in table:
        assert row["failed"] == 0, row
        assert row["checked"] == row["requests"] == row["concurrency"], row
        assert row["same_as_alone"] == row["checked"], row  # f32, the target as its own draft: exact
    assert "same as alone" in run.stdout and "3/3" in run.stdout
    # the capturing server's own account of what capture cost, per level, beside its tokens/s
    captured = [row for row in table if row["config"] == "spec+capture"]
    assert all(0 < row["capture_s"] < row["wall_s"] for row in captured), captured
    assert "capture's own work" in run.stdout
    # the draft lengths each level chose, from the server's counters: none for plain, at most 2 at k=2
    for row in table:
        assert row["k_steps"] > 0 and 0 < row["target_s"] < row["wall_s"], row
        if row["config"] == "plain":
            assert row["k_sum"] == 0 and row["k_plain_steps"] == row["k_steps"], row
        if row["config"] == "spec-k2":
            assert 0 < row["k_sum"] <= 2 * row["k_steps"] and row["k_plain_steps"] < row["k_steps"], row
    assert "mean k" in run.stdout
    assert all(row["cost_ratios"]["2"] >= 1.0 for row in table), table
    texts: dict[int, set[str]] = {}
    for level in report["runs"]:
        for output in level["outputs"]:
            texts.setdefault(output["prompt"], set()).add(output["text"])
    assert sorted(texts) == [0, 1, 2]
    assert all(len(variants) == 1 and "" not in variants for variants in texts.values()), texts
