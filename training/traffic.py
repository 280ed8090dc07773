"""Served traffic as alignment data: read a capture folder (fastdraft/traffic.py), refuse what does not belong to
this target, split off the newest slice as held-out, and cut training examples with the target's top-K.

Boundary: numpy only; knows the capture format and the draft's vocabulary map, nothing about models or the
optimizer (training/distill.py is the loss, training/align.py the run).

An example is (input ids, labels, top ids, top log-probabilities): position t of the input predicts token t + 1;
labels are the served tokens (-100 on the prompt), and at each output position the target's K most likely
tokens in the draft's OUTPUT rows (-1 where the draft cannot name the token: its probability then counts in
the remainder bucket of the loss) with their log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdraft import traffic


class TrafficError(SystemExit):
    """The capture cannot be used for this target; the message names the file and the reason."""


@dataclass
class TrafficSplit:
    train: list[dict]
    held_out: list[dict]
    report: traffic.ReadReport
    tasks: dict[str, int] = field(default_factory=dict)  # records per task (train + held out)

    def describe(self) -> str:
        tasks = ", ".join(f"{name} {count}" for name, count in sorted(self.tasks.items()))
        return (f"{self.report.describe()}; {len(self.train)} to train on, {len(self.held_out)} held out "
                f"(newest); tasks: {tasks}")


def task_of(record: dict) -> str:
    return str(record.get("task") or record.get("endpoint") or "unknown")


def load_split(folder: str | Path, target_name: str, target_revision: str, vocab_size: int,
               held_out_fraction: float = 0.1) -> TrafficSplit:
    """Every usable record of `folder`, checked against the target; the newest `held_out_fraction` held out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrafficError(f"{folder}: no such capture folder (serve with --capture-dir {folder} to fill one)")
    if not traffic.shards(folder):
        raise TrafficError(f"{folder}: no capture shards ({traffic.SHARD_GLOB}); serve with --capture-dir {folder} "
                           "and send some traffic first")
    report = traffic.ReadReport()
    records = []
    for path, line, record in traffic.read_records(folder, report):
        check_record(record, f"{path}: line {line}", target_name, target_revision, vocab_size)
        records.append(record)
    if not records:
        torn = "; ".join(report.torn[:3])
        raise TrafficError(f"{folder}: no readable record in {report.shards} shards ({len(report.torn)} torn lines: {torn})")
    records.sort(key=lambda r: (r["time"], r["id"]))
    held = 0 if held_out_fraction <= 0 or len(records) < 2 else max(1, round(len(records) * held_out_fraction))
    tasks: dict[str, int] = {}
    for record in records:
        tasks[task_of(record)] = tasks.get(task_of(record), 0) + 1
    return TrafficSplit(records[:len(records) - held], records[len(records) - held:], report, tasks)


def check_record(record: dict, where: str, target_name: str, target_revision: str, vocab_size: int) -> None:
    """Refuse a record captured from another target, or one whose ids this target does not have."""
    captured = record.get("target") or {}
    if captured.get("revision") != target_revision:
        raise TrafficError(f"{where}: captured from target {captured.get('name')} revision {captured.get('revision')}, "
                           f"not {target_name} revision {target_revision}: its distributions are another model's")
    sizes = {"output_ids": len(record["output_ids"]), "top_ids": len(record["top_ids"]),
             "top_logprobs": len(record["top_logprobs"])}
    if len(set(sizes.values())) != 1:
        raise TrafficError(f"{where}: one entry per output token expected, got {sizes}")
    for name in ("prompt_ids", "output_ids"):
        ids = record[name]
        if ids and (min(ids) < 0 or max(ids) >= vocab_size):
            raise TrafficError(f"{where}: {name} holds id {max(ids) if max(ids) >= vocab_size else min(ids)}, outside "
                               f"{target_name}'s vocabulary of {vocab_size}")
    flat = [token for row in record["top_ids"] for token in row]
    if flat and (min(flat) < 0 or max(flat) >= vocab_size):
        raise TrafficError(f"{where}: top_ids outside {target_name}'s vocabulary of {vocab_size}")


def to_examples(records: list[dict], seq_len: int, label_table: np.ndarray | None,
                input_table: np.ndarray | None) -> list[tuple]:
    """(inputs, labels, top ids, top logprobs) per record; prompt left-truncated to fit `seq_len` (see above)."""
    examples = []
    for record in records:
        output = record["output_ids"][:seq_len]
        if not output:
            continue
        prompt = record["prompt_ids"][-(seq_len + 1 - len(output)):] if len(output) <= seq_len else []
        ids = np.asarray(prompt + output, dtype=np.int64)
        count, k = len(output), int(record["top_k"])
        labels = np.full(len(ids), -100, dtype=np.int64)
        served = np.asarray(output, dtype=np.int64)
        labels[len(prompt):] = served if label_table is None else label_table[served]
        top_ids = np.full((len(ids), k), -1, dtype=np.int64)
        top_logprobs = np.zeros((len(ids), k), dtype=np.float32)
        for row, (tokens, values) in enumerate(zip(record["top_ids"][:count], record["top_logprobs"][:count])):
            tokens = np.asarray(tokens, dtype=np.int64)
            mapped = tokens if label_table is None else label_table[tokens]
            top_ids[len(prompt) + row, :len(tokens)] = np.where(mapped < 0, -1, mapped)
            top_logprobs[len(prompt) + row, :len(values)] = values
        if input_table is not None:
            ids = input_table[ids]
        # position t predicts token t + 1
        examples.append((ids[:-1], labels[1:], top_ids[1:], top_logprobs[1:]))
    return examples


def as_prompts(records: list[dict]) -> list[dict]:
    """Held-out records as evaluation prompts (token ids, so evaluation reads exactly what was served), their task
    marked `traffic:<task>` so the figures stay apart from an --eval-prompts set's."""
    return [{"id": record["id"], "task": f"traffic:{task_of(record)}", "prompt_ids": record["prompt_ids"]}
            for record in records]
