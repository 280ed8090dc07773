"""Traffic capture (opt-in, `--capture-dir`): every finished choice's token ids and the target's top alternatives,
appended to shards off the request path, for `python -m training.align --from-traffic`.

Boundary: takes finished records (dicts in fastdraft/traffic.py's format) from any thread and writes them on its
own thread; knows nothing of HTTP or the engine. Serving never waits on it: `offer()` only puts on a bounded
queue, and a full queue or a failing disk drops the record (counted on /metrics) instead of slowing anyone.

Disk use is bounded by `max_bytes`: shards rotate at `shard_bytes`, and the oldest shards are deleted first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
from pathlib import Path

from fastdraft import traffic

log = logging.getLogger(__name__)

_STOP = object()
QUEUE_RECORDS = 1024  # records waiting to be written; beyond this they are dropped, never waited for


class TrafficCapture:
    def __init__(self, folder: str | Path, metrics, max_bytes: int, sample: float = 1.0, top_logprobs: int = 8,
                 shard_bytes: int | None = None, rng: random.Random | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.shard_bytes = shard_bytes or max(1 << 16, min(64 << 20, max_bytes // 4))
        self.sample = sample
        self.top_logprobs = top_logprobs
        self._rng = rng or random.Random()
        self._queue: queue.Queue = queue.Queue(QUEUE_RECORDS)
        self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._shard_number = 0
        self._handle = None
        self._path: Path | None = None  # the shard being appended to
        self._written = 0  # bytes in the current shard
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="fastdraft-capture", daemon=True)
        self._thread.start()
        metrics.capture_bytes.set_function(self.bytes_on_disk)

    def wants(self, store: bool | None) -> bool:
        """Whether to capture one choice: never when the request said `store: false`, else by the sample rate."""
        return store is not False and (self.sample >= 1.0 or self._rng.random() < self.sample)

    def offer(self, record: dict) -> None:
        """Queue a finished choice for writing; never blocks."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.metrics.capture_dropped.labels("queue_full").inc()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop (called at shutdown)."""
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything offered so far is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def bytes_on_disk(self) -> int:
        return sum(path.stat().st_size for path in traffic.shards(self.folder) if path.exists())

    # --- the writer thread

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is _STOP:
                    break
                self._write(record)
            finally:
                self._queue.task_done()
        if self._handle is not None:
            self._handle.close()

    def _write(self, record: dict) -> None:
        started = time.perf_counter()
        try:
            self._encode_and_write(record)
        finally:
            self.metrics.capture_seconds.labels("write").inc(time.perf_counter() - started)

    def _encode_and_write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            # a new shard when this one is full, or was deleted under us (the documented way to discard capture)
            if self._handle is None or self._written + len(line) > self.shard_bytes or not self._path.exists():
                self._rotate()
            self._handle.write(line)  # one write per record: a crash tears at most this line
            self._handle.flush()
            self._written += len(line)
        except OSError as error:
            self.metrics.capture_dropped.labels("write_error").inc()
            if not self._failing:
                log.error("traffic capture cannot write to %s: %s (records are dropped until it can)", self.folder, error)
            self._failing = True
            self._handle = None
            return
        self._failing = False
        self.metrics.capture_records.inc()
        self.metrics.capture_tokens.inc(len(record["output_ids"]))

    def _rotate(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._shard_number += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path = self.folder / traffic.shard_name(self._started, os.getpid(), self._shard_number)
        self._handle = open(path, "ab", buffering=0)
        self._written = 0
        self._enforce_limit(keep=path)

    def _enforce_limit(self, keep: Path) -> None:
        """Delete the oldest shards until the folder holds at most max_bytes (the current shard stays)."""
        sizes = [(path, path.stat().st_size) for path in traffic.shards(self.folder)]
        total = sum(size for _, size in sizes) + self.shard_bytes  # room for the shard being filled
        for path, size in sizes:
            if total <= self.max_bytes or path == keep:
                break
            path.unlink(missing_ok=True)
            total -= size
            self.metrics.capture_shards_deleted.inc()
            log.info("traffic capture: deleted %s (over --capture-max-bytes %d)", path.name, self.max_bytes)


def capture_record(*, endpoint: str, metadata: dict[str, str] | None, models: dict, vocab_size: int, finish_reason: str,
                   sampling, prompt_ids: list[int], output_ids: list[int], target_top: list, top_logprobs: int) -> dict:
    """One choice in fastdraft/traffic.py's format. `target_top`: drafting TokenLogprob per output token."""
    target = models.get("target") or {}
    return {
        "format": traffic.FORMAT, "version": traffic.VERSION, "id": os.urandom(8).hex(), "time": round(time.time(), 3),
        "endpoint": endpoint, "task": (metadata or {}).get("task"), "metadata": metadata or {},
        "target": {"name": target.get("name"), "revision": target.get("revision"), "vocab_size": vocab_size},
        "draft": models.get("draft"), "proposer": models.get("proposer"), "finish_reason": finish_reason,
        "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k},
        "prompt_ids": list(prompt_ids), "output_ids": list(output_ids), "top_k": top_logprobs,
        "top_ids": [[token for token, _ in lp.top] for lp in target_top],
        "top_logprobs": [[round(value, 4) for _, value in lp.top] for lp in target_top],
        "token_logprobs": [round(lp.logprob, 4) for lp in target_top],
    }
