"""Traffic capture and the data it feeds: the writer (server/capture.py), the format's reader (fastdraft/traffic.py),
the checks and split of training/traffic.py, and the logit-level loss (training/distill.py). No model needed."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from drafting.logprobs import TokenLogprob
from drafting.sampling import SamplingParams
from fastdraft import traffic
from server.capture import TrafficCapture, capture_record
from server.metrics import Metrics
from training.distill import topk_kl_sum
from training.traffic import TrafficError, load_split, to_examples

MODELS = {"target": {"name": "tiny", "revision": "rev-a"}, "draft": {"name": "d", "revision": "rev-d"}, "proposer": "d"}


def record(output_ids: list[int], prompt_ids=(1, 2, 3), task: str | None = "chat", when: float | None = None,
           top_k: int = 2) -> dict:
    tops = [TokenLogprob(t, -0.1, [(t, -0.1), (t + 1, -2.5)][:top_k]) for t in output_ids]
    made = capture_record(endpoint="chat", metadata={"task": task} if task else None, models=MODELS, vocab_size=50,
                          finish_reason="stop", sampling=SamplingParams(), prompt_ids=list(prompt_ids),
                          output_ids=output_ids, target_top=tops, top_logprobs=top_k)
    if when is not None:
        made["time"] = when
    return made


def counter(metrics: Metrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_capture_writes_records_that_read_back(tmp_path):
    metrics = Metrics()
    capture = TrafficCapture(tmp_path / "cap", metrics, max_bytes=1 << 20)
    for i in range(5):
        capture.offer(record([10 + i, 11 + i]))
    assert capture.flush()
    report = traffic.ReadReport()
    rows = [r for _, _, r in traffic.read_records(tmp_path / "cap", report)]
    assert [r["output_ids"] for r in rows] == [[10 + i, 11 + i] for i in range(5)]
    assert rows[0]["top_ids"] == [[10, 11], [11, 12]] and rows[0]["top_logprobs"][0] == [-0.1, -2.5]
    assert rows[0]["task"] == "chat" and rows[0]["target"] == {"name": "tiny", "revision": "rev-a", "vocab_size": 50}
    assert report.records == 5 and not report.torn
    assert counter(metrics, "fastdraft:capture_records_total") == 5
    assert counter(metrics, "fastdraft:capture_tokens_total") == 10
    assert counter(metrics, "fastdraft:capture_bytes") == capture.bytes_on_disk() > 0
    capture.close()


def test_shards_rotate_and_the_oldest_go_first(tmp_path):
    metrics = Metrics()
    line = len(json.dumps(record([1] * 40), separators=(",", ":"))) + 1
    capture = TrafficCapture(tmp_path, metrics, max_bytes=6 * line, shard_bytes=2 * line)
    for i in range(12):
        capture.offer(record([i] * 40))
        assert capture.flush()
    shards = traffic.shards(tmp_path)
    assert capture.bytes_on_disk() <= 6 * line and len(shards) >= 2
    kept = [r["output_ids"][0] for _, _, r in traffic.read_records(tmp_path)]
    assert kept == list(range(12 - len(kept), 12))  # the newest records survive, in order
    assert counter(metrics, "fastdraft:capture_shards_deleted_total") > 0
    capture.close()


def test_a_deleted_shard_is_replaced_not_written_into(tmp_path):
    capture = TrafficCapture(tmp_path, Metrics(), max_bytes=1 << 20)
    capture.offer(record([1]))
    assert capture.flush()
    for shard in traffic.shards(tmp_path):
        shard.unlink()  # what a user does to discard the capture
    capture.offer(record([2]))
    assert capture.flush()
    assert [r["output_ids"] for _, _, r in traffic.read_records(tmp_path)] == [[2]]
    capture.close()


def test_an_unwritable_folder_drops_and_counts_without_raising(tmp_path):
    metrics = Metrics()
    capture = TrafficCapture(tmp_path / "cap", metrics, max_bytes=1 << 20)
    (tmp_path / "cap").rmdir()
    (tmp_path / "cap").write_text("a file where the folder was")
    capture.offer(record([1]))
    assert capture.flush()
    assert counter(metrics, "fastdraft:capture_dropped_total", reason="write_error") == 1
    assert counter(metrics, "fastdraft:capture_records_total") == 0
    capture.close()


def test_wants_honours_store_false_and_the_sample_rate():
    import random

    always = TrafficCapture.__new__(TrafficCapture)
    always.sample, always._rng = 1.0, random.Random(0)
    assert always.wants(None) and always.wants(True) and not always.wants(False)
    sampled = TrafficCapture.__new__(TrafficCapture)
    sampled.sample, sampled._rng = 0.25, random.Random(0)
    share = sum(sampled.wants(None) for _ in range(4000)) / 4000
    assert abs(share - 0.25) < 0.03


def write_shard(folder: Path, rows: list[dict], tail: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / traffic.shard_name("20261202T000000", 1, len(traffic.shards(folder)) + 1)
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + tail)
    return path


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    whole = json.dumps(record([7, 8])).encode()
    path = write_shard(tmp_path, [record([5, 6])], tail=whole[: len(whole) // 2])
    split = load_split(tmp_path, "tiny", "rev-a", 50, held_out_fraction=0.0)
    assert [r["output_ids"] for r in split.train] == [[5, 6]]
    assert len(split.report.torn) == 1 and str(path) in split.report.torn[0] and "cut short" in split.report.torn[0]


def test_refusals_name_the_folder_or_the_file_and_the_reason(tmp_path):
    with pytest.raises(TrafficError, match="no such capture folder"):
        load_split(tmp_path / "absent", "tiny", "rev-a", 50)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrafficError, match="no capture shards"):
        load_split(tmp_path / "empty", "tiny", "rev-a", 50)
    torn_only = write_shard(tmp_path / "torn", [], tail=b'{"format": "fastdraft-traffic", "id"')
    with pytest.raises(TrafficError, match=f"no readable record.*{torn_only.name}"):
        load_split(tmp_path / "torn", "tiny", "rev-a", 50)
    other = record([1, 2])
    other["target"]["revision"] = "rev-b"
    path = write_shard(tmp_path / "other", [record([1, 2]), other])
    with pytest.raises(TrafficError, match=f"{path.name}: line 2: captured from target tiny revision rev-b, not tiny revision rev-a"):
        load_split(tmp_path / "other", "tiny", "rev-a", 50)
    path = write_shard(tmp_path / "range", [record([1, 60])])
    with pytest.raises(TrafficError, match=f"{path.name}: line 1: output_ids holds id 60, outside tiny's vocabulary of 50"):
        load_split(tmp_path / "range", "tiny", "rev-a", 50)


def test_the_newest_slice_is_held_out(tmp_path):
    write_shard(tmp_path, [record([i], when=1000.0 + (i * 7) % 10) for i in range(10)])
    split = load_split(tmp_path, "tiny", "rev-a", 50, held_out_fraction=0.2)
    assert len(split.held_out) == 2 and len(split.train) == 8
    assert min(r["time"] for r in split.held_out) > max(r["time"] for r in split.train)


def test_examples_shift_by_one_and_map_to_the_draft_rows():
    label_table = np.full(50, -100, dtype=np.int64)
    label_table[[1, 2, 3, 10, 11]] = [0, 1, 2, 3, 4]  # 12 is outside the reduced vocabulary
    (ids, labels, top_ids, top_logprobs), = to_examples([record([10, 11], prompt_ids=(1, 2, 3))], 16, label_table, None)
    assert ids.tolist() == [1, 2, 3, 10] and labels.tolist() == [-100, -100, 3, 4]
    assert top_ids[:2].tolist() == [[-1, -1], [-1, -1]]  # prompt positions carry no distribution
    assert top_ids[2].tolist() == [3, 4] and top_ids[3].tolist() == [4, -1]  # 12 -> -1: counted as remainder
    assert np.allclose(top_logprobs[3], [-0.1, -2.5])


def test_topk_kl_is_zero_at_the_target_and_positive_elsewhere():
    torch.manual_seed(0)
    vocab, k = 12, 3
    target = torch.randn(2, 4, vocab)
    logp = torch.log_softmax(target, -1)
    top = logp.topk(k, -1)
    ids, values = top.indices.clone(), top.values.clone()
    ids[0, 0] = -1  # a prompt position
    assert float(topk_kl_sum(target, ids, values)) == pytest.approx(0.0, abs=1e-5)
    draft = torch.randn(2, 4, vocab, requires_grad=True)
    loss = topk_kl_sum(draft, ids, values)
    assert float(loss.detach()) > 0.01
    loss.backward()
    assert torch.isfinite(draft.grad).all() and float(draft.grad[0, 0].abs().sum()) == 0.0
    # by hand for one position: K buckets + the remainder
    p, q = logp[1, 2].exp(), torch.softmax(draft[1, 2].detach(), -1)
    chosen = ids[1, 2]
    p_rest, q_rest = 1 - p[chosen].sum(), 1 - q[chosen].sum()
    expected = float((p[chosen] * (p[chosen].log() - q[chosen].log())).sum() + p_rest * (p_rest.log() - q_rest.log()))
    single = topk_kl_sum(draft.detach()[1:2, 2:3], ids[1:2, 2:3], values[1:2, 2:3])
    assert float(single) == pytest.approx(expected, rel=1e-4)


def test_a_token_the_draft_cannot_name_moves_to_the_remainder():
    vocab = 6
    values = torch.log(torch.tensor([[[0.5, 0.3]]]))
    named = topk_kl_sum(torch.zeros(1, 1, vocab), torch.tensor([[[0, 1]]]), values)
    unnamed = topk_kl_sum(torch.zeros(1, 1, vocab), torch.tensor([[[0, -1]]]), values)
    # uniform q: with both named, KL = .5 ln(.5*6) + .3 ln(.3*6) + .2 ln(.2/(4/6)); with 1 unnamed its .3 joins "other"
    assert float(named) == pytest.approx(0.5 * math.log(3) + 0.3 * math.log(1.8) + 0.2 * math.log(0.3), rel=1e-4)
    assert float(unnamed) == pytest.approx(0.5 * math.log(3) + 0.5 * math.log(0.5 / (5 / 6)), rel=1e-4)
