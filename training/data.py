"""Read a tokenized corpus (training/corpus.py's manifest + uint32 shards) and cut packed training batches.

Boundary: numpy only; knows the manifest format and the batch sampler, nothing about models.

Packing: each domain (nl, code) is one token stream, the concatenation of its sources' shards, documents
separated by EOS; a training row is a window of seq_len + 1 consecutive tokens (no padding, no waste).
The batch for a step is a pure function of (seed, step, mix): row r draws its domain with the stage's mix
weights and a window uniformly at random, from `numpy.random.default_rng([seed, step, r])`. So the data
position is just the step number: resuming at step s, or splitting rows over DDP ranks, reads exactly the
rows an uninterrupted single-process run would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.corpus import FORMAT, MANIFEST


class CorpusError(ValueError):
    """A corpus file is missing or does not match its manifest; the message names the file."""


class Corpus:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        if not manifest_path.exists():
            raise CorpusError(f"{manifest_path}: no corpus manifest (build one with python -m training.corpus)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise CorpusError(f"{manifest_path}: line {error.lineno} column {error.colno}: {error.msg}") from None
        if self.manifest.get("format") != FORMAT:
            raise CorpusError(f"{manifest_path}: format must be {FORMAT!r}, got {self.manifest.get('format')!r}")
        self.separator_id = int(self.manifest["tokenizer"]["separator_id"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.streams: dict[str, list[np.memmap]] = {}
        for source in self.manifest["sources"]:
            path = self.folder / "tokens" / f"{source['name']}.bin"
            if not path.exists():
                raise CorpusError(f"{path}: shard listed in {manifest_path} is missing")
            size = path.stat().st_size
            if size != 4 * source["tokens"]:
                raise CorpusError(f"{path}: expected {source['tokens']} tokens ({4 * source['tokens']} bytes), "
                                  f"found {size} bytes")
            if source["tokens"]:
                self.streams.setdefault(source["domain"], []).append(np.memmap(path, dtype=np.uint32, mode="r"))
        self.offsets = {d: np.cumsum([0] + [len(m) for m in maps]) for d, maps in self.streams.items()}

    def domain_tokens(self, domain: str) -> int:
        return int(self.offsets[domain][-1]) if domain in self.offsets else 0

    def stage_mix(self, stage: str) -> dict[str, float]:
        stages = self.manifest.get("stages", {})
        if stage not in stages:
            raise CorpusError(f"{self.folder / MANIFEST}: no stage {stage!r}; stages: {', '.join(stages) or 'none'}")
        return stages[stage]

    def read(self, domain: str, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of a domain's stream, across shard boundaries."""
        maps, offsets = self.streams[domain], self.offsets[domain]
        out = np.empty(length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(offsets, start, side="right") - 1)
        position = start - offsets[shard]
        while filled < length:
            piece = maps[shard][position:position + length - filled]
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
            shard, position = shard + 1, 0
        return out

    def token_counts(self) -> np.ndarray:
        """Histogram [vocab] of every token in the corpus (for choosing a reduced draft vocabulary)."""
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for maps in self.streams.values():
            for tokens in maps:
                for start in range(0, len(tokens), 1 << 24):
                    counts += np.bincount(tokens[start:start + (1 << 24)], minlength=self.vocab_size)[: self.vocab_size]
        return counts

    def batch(self, step: int, rows: int, seq_len: int, mix: dict[str, float], seed: int) -> np.ndarray:
        """[rows, seq_len + 1] int64 token windows for `step` (see the module docstring)."""
        domains = sorted(mix)
        weights = np.array([mix[d] for d in domains], dtype=np.float64)
        weights /= weights.sum()
        out = np.empty((rows, seq_len + 1), dtype=np.int64)
        for row in range(rows):
            rng = np.random.default_rng([seed, step, row])
            domain = domains[int(rng.choice(len(domains), p=weights))]
            available = self.domain_tokens(domain) - (seq_len + 1)
            if available < 0:
                raise CorpusError(f"{self.folder}: domain {domain!r} has {self.domain_tokens(domain)} tokens, "
                                  f"fewer than one window of {seq_len + 1}")
            out[row] = self.read(domain, int(rng.integers(available + 1)), seq_len + 1)
        return out
