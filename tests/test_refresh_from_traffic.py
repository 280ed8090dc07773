"""Serve, capture, refresh, reload, on a real server: the loop `fastdraft serve --capture-dir` ->
`python -m training.align --from-traffic` -> atomic publish -> reload, with requests in flight all the while.

The target is the tiny random Qwen2 of training/fixtures.py (fp32 IR), the draft a few-step tiny pretrain over
its tokenizer, so the whole module runs in a minute or two; what it checks is the plumbing and the refusals,
not the quality of the refresh (that is measured on the real models: README, "Refreshing the draft").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import httpx
import openai
import pytest

from fastdraft import traffic
from server import launch
from test_training_pipeline import build_world, pretrain_args
from training import align, pretrain
from training.export import export_draft
from training.publish import publish

pytestmark = pytest.mark.slow

KEY = "sk-refresh-test"
CHAT = [{"role": "user", "content": "Tell me about the river in the morning."}]
CODE = "def wrap(text, width):\n    \"\"\"Wrap the text.\"\"\"\n"


def wait_for(condition, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def scraped(server, series: str) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def captured(server) -> float:
    return scraped(server, "fastdraft:capture_records_total")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny factory's inputs (as test_training_pipeline builds them), with FASTDRAFT_HOME pointed at a scratch
    folder for this module only: the session-wide fixture there would keep it for every later module."""
    root = tmp_path_factory.mktemp("refresh-world")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTDRAFT_HOME", str(root / "home"))
        yield build_world(root)


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    """A tiny draft published where the server reads it, and a server capturing its traffic."""
    root = tmp_path_factory.mktemp("refresh")
    assert pretrain.main(pretrain_args(world, root / "pt", "--steps", "2")) == 0
    export_draft(root / "pt" / "hf", root / "pt" / "ir", "fp32")
    published = publish(root / "pt" / "ir", root / "drafts" / "tiny-draft")
    server = launch.ServerProcess(["--target", str(world / "target-ir"), "--draft", str(published), "--no-pull",
                                   "--precision", "f32", "--api-key", KEY, "--no-adaptive", "--num-draft-tokens", "3",
                                   "--capture-dir", str(root / "capture"), "--max-running", "4"],
                                  root / "server.log", ready_timeout_s=180)
    server.root, server.draft_hf, server.published = root, root / "pt" / "hf", published
    yield server
    server.stop()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_capture_records_what_was_served(served):
    api = client(served)
    model = api.models.list().data[0].id
    before = captured(served)
    chat = api.chat.completions.create(model=model, messages=CHAT, max_tokens=12, temperature=0,
                                       metadata={"task": "chat"}, logprobs=True, top_logprobs=2)
    code = api.completions.create(model=model, prompt=CODE, max_tokens=12, temperature=0,
                                  extra_body={"metadata": {"task": "code"}})
    api.completions.create(model=model, prompt=CODE, max_tokens=6, temperature=0, extra_body={"store": False})
    # a choice is offered to the capture before its response goes out, and written in order: once the marker
    # sent after it is on disk, a record of the store: false one would be there too
    api.completions.create(model=model, prompt=CODE, max_tokens=2, temperature=0,
                           extra_body={"metadata": {"task": "code", "marker": "last"}})
    wait_for(lambda: captured(served) >= before + 3, what="three captured choices")
    assert captured(served) == before + 3
    rows = [r for _, _, r in traffic.read_records(served.root / "capture")]
    assert [(r["task"], r["metadata"].get("marker")) for r in rows[-3:]] == [("chat", None), ("code", None),
                                                                            ("code", "last")]
    by_task = {r["task"]: r for r in rows[-3:-1]}
    chat_row, code_row = by_task["chat"], by_task["code"]
    assert chat_row["endpoint"] == "chat" and code_row["endpoint"] == "completions"
    assert len(code_row["output_ids"]) == code.usage.completion_tokens == len(code_row["top_ids"])
    assert len(code_row["prompt_ids"]) == code.usage.prompt_tokens and chat_row["top_k"] == 8
    # greedy: the served token is the target's most likely one, and its logprob is the API's
    assert all(top[0] == token for top, token in zip(code_row["top_ids"], code_row["output_ids"]))
    api_logprobs = [t.logprob for t in chat.choices[0].logprobs.content]
    assert chat_row["token_logprobs"][:len(api_logprobs)] == pytest.approx(api_logprobs, abs=2e-4)
    assert chat_row["target"]["revision"] == httpx.get(served.url + "/health").json()["target"]["revision"]
    assert chat_row["draft"] == httpx.get(served.url + "/health").json()["draft"]
    # what capture cost, by stage: each did some work, within the time the requests took
    spent = {stage: scraped(served, f'fastdraft:capture_seconds_total{{stage="{stage}"}}')
             for stage in ("score", "record", "write")}
    assert all(seconds > 0 for seconds in spent.values()), spent
    served_seconds = sum(scraped(served, f'fastdraft:e2e_request_latency_seconds_sum{{endpoint="{endpoint}"}}')
                         for endpoint in ("chat", "completions"))
    assert sum(spent.values()) < served_seconds, (spent, served_seconds)


def test_bad_metadata_is_a_400_naming_the_field(served):
    api = client(served)
    model = api.models.list().data[0].id
    with pytest.raises(openai.BadRequestError, match="metadata"):
        api.completions.create(model=model, prompt=CODE, max_tokens=4, extra_body={"metadata": {"k": "v" * 513}})
    with pytest.raises(openai.BadRequestError, match="metadata"):
        api.completions.create(model=model, prompt=CODE, max_tokens=4,
                               extra_body={"metadata": {f"k{i}": "v" for i in range(17)}})


def test_refresh_publishes_and_reloads_with_no_failed_request(served, world):
    api = client(served)
    model = api.models.list().data[0].id
    for i in range(6):  # enough traffic for a split: train on the older, hold out the newest
        api.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Story number {i}, please."}],
                                    max_tokens=16, temperature=0, metadata={"task": "chat"})
        api.completions.create(model=model, prompt=f"{CODE}# variant {i}\n", max_tokens=16, temperature=0,
                               extra_body={"metadata": {"task": "code"}})
    wait_for(lambda: captured(served) >= 12, what="captured traffic")
    old = httpx.get(served.url + "/health").json()["draft"]

    failures, results, stop = [], [], threading.Event()

    def traffic_in_flight():
        while not stop.is_set():
            try:
                # tagged like the rest: align may read the capture after some of these finished
                stream = client(served).completions.create(model=model, prompt=CODE, max_tokens=24, temperature=0,
                                                           stream=True, stream_options={"include_usage": True},
                                                           extra_body={"metadata": {"task": "code"}})
                usage = None
                for chunk in stream:
                    usage = chunk.usage or usage
                results.append(usage.model_extra["speculative"]["draft"])
            except Exception as error:  # every request must succeed through the reload
                failures.append(repr(error))

    workers = [threading.Thread(target=traffic_in_flight) for _ in range(2)]
    for worker in workers:
        worker.start()
    out = served.root / "refresh"
    try:
        # the draft as the server has it (an IR folder): align reads it back into a trainable model first
        code = align.main(["--target", str(world / "target-ir"), "--draft", str(served.published),
                           "--from-traffic", str(served.root / "capture"), "--out", str(out), "--steps", "3",
                           "--batch-size", "2", "--seq-len", "64", "--threads", "1", "--kd-weight", "0.5",
                           "--eval-limit", "2", "--eval-max-new-tokens", "8", "--precision", "f32", "--draft-weight-format", "fp32",
                           "--publish", str(served.published), "--server-url", served.url, "--server-api-key", KEY,
                           "--force"])
        assert code == 0
        new = httpx.get(served.url + "/health").json()["draft"]
        wait_for(lambda: results and results[-1] == new, what="a response from the new draft")
    finally:
        stop.set()
        for worker in workers:
            worker.join(120)
    assert not failures, failures
    assert new["revision"] != old["revision"] and old in results and results[-1] == new
    summary = json.loads((out / "align_summary.json").read_text())
    assert summary["decision"]["action"] == "publish" and summary["data"]["traffic_examples"] > 0
    agreement = summary["held_out_agreement"]
    assert agreement["before"]["all"]["tokens"] == agreement["after"]["all"]["tokens"] > 0
    assert set(summary["new"]["tasks"]) <= {"traffic:chat", "traffic:code"} and summary["published"] is not None
    split = json.loads((out / "traffic_split.json").read_text())
    assert split["held_out"] and not set(split["held_out"]) & set(split["train"])


def test_refusals_publish_nothing(served, world, tmp_path):
    before = httpx.get(served.url + "/health").json()["draft"]
    common = ["--target", str(world / "target-ir"), "--draft", str(served.draft_hf), "--steps", "1",
              "--batch-size", "2", "--seq-len", "32", "--threads", "1", "--publish", str(served.published), "--force"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=f"{tmp_path / 'empty'}: no capture shards"):
        align.main(common + ["--from-traffic", str(tmp_path / "empty"), "--out", str(tmp_path / "a")])
    # a capture from another target revision: refused naming the shard and line
    other = tmp_path / "other"
    shutil.copytree(served.root / "capture", other)
    shard = traffic.shards(other)[-1]
    lines = shard.read_text().splitlines()
    record = json.loads(lines[0])
    record["target"]["revision"] = "0123456789ab"
    shard.write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
    with pytest.raises(SystemExit, match=f"{shard.name}: line 1: captured from target .* revision 0123456789ab"):
        align.main(common + ["--from-traffic", str(other), "--out", str(tmp_path / "b")])
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()
    assert httpx.get(served.url + "/health").json()["draft"] == before


def test_a_killed_server_leaves_readable_shards(served):
    api = client(served)
    model = api.models.list().data[0].id
    before = captured(served)
    api.completions.create(model=model, prompt=CODE, max_tokens=8, temperature=0)
    wait_for(lambda: captured(served) >= before + 1, what="one more record")
    os.kill(served.proc.pid, signal.SIGKILL)
    served.proc.wait(30)
    report = traffic.ReadReport()
    rows = list(traffic.read_records(served.root / "capture", report))
    assert len(rows) == before + 1 and len(report.torn) <= 1
