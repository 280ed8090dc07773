"""The traffic-capture format: what the server writes (server/capture.py) and alignment reads (training/traffic.py).

Boundary: the record layout, shard naming and a reader that survives torn writes; standard library only, no
server or training imports, so both halves agree on one definition.

A capture folder holds append-only shards `traffic-<UTC time>-<pid>-<n>.jsonl`, one JSON object per line, one
line per finished choice:

    {"format": "fastdraft-traffic", "version": 1, "id": "<hex>", "time": <unix seconds at the end>,
     "endpoint": "completions" | "chat", "task": <metadata.task or null>, "metadata": {<the request's metadata>},
     "target": {"name", "revision", "vocab_size"}, "draft": {"name", "revision"} | null, "proposer": <name>,
     "finish_reason": "stop" | "length", "sampling": {"temperature", "top_p", "top_k"},
     "prompt_ids": [...], "output_ids": [...],            # token ids only: no text is stored
     "top_k": K, "top_ids": [[K ids] per output token],   # the target's K most likely tokens at that position
     "top_logprobs": [[K log-probabilities]], "token_logprobs": [the served token's log-probability]}

Log-probabilities are those of the target's raw logits (temperature 1, before top-k/top-p), rounded to 4
decimals. A shard is only ever appended to by the process that created it, one whole line per write, so a
crash leaves at most its last line torn: readers skip such a line (no newline at the end, or not JSON, or not
a record) and count it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

FORMAT = "fastdraft-traffic"
VERSION = 1
SHARD_GLOB = "traffic-*.jsonl"
REQUIRED = ("id", "time", "endpoint", "target", "prompt_ids", "output_ids", "top_k", "top_ids", "top_logprobs")


def shard_name(started: str, pid: int, number: int) -> str:
    """`started` is a UTC time stamp like 20261202T101500; names sort by creation time."""
    return f"traffic-{started}-{pid}-{number:05d}.jsonl"


def shards(folder: str | Path) -> list[Path]:
    """The folder's shards, oldest first."""
    return sorted(Path(folder).glob(SHARD_GLOB))


@dataclass
class ReadReport:
    """What reading a capture folder found, for the summary and for refusals that name the file."""

    shards: int = 0
    records: int = 0
    torn: list[str] = field(default_factory=list)  # "<file>: line <n>: <why>" per skipped line

    def describe(self) -> str:
        return f"{self.records} records in {self.shards} shards, {len(self.torn)} torn lines skipped"


def read_records(folder: str | Path, report: ReadReport | None = None) -> Iterator[tuple[Path, int, dict]]:
    """(shard, line number, record) for every readable record, oldest shard first; torn lines go to `report`."""
    report = report if report is not None else ReadReport()
    for path in shards(folder):
        report.shards += 1
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                record, why = _parse(raw)
                if why is None:
                    missing = [name for name in REQUIRED if name not in record]
                    if record.get("format") != FORMAT:
                        why = f"format {record.get('format')!r}, expected {FORMAT!r}"
                    elif missing:
                        why = f"missing {', '.join(missing)}"
                if why is not None:
                    report.torn.append(f"{path}: line {number}: {why}")
                    continue
                report.records += 1
                yield path, number, record


def _parse(raw: bytes) -> tuple[dict, str | None]:
    if not raw.endswith(b"\n"):
        return {}, "no end of line (a write cut short)"
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return {}, f"not JSON ({error})"
    return (value, None) if isinstance(value, dict) else ({}, "not a JSON object")
