"""Reduced draft vocabulary: the N most frequent target tokens, and the map between draft and target ids.

Why: with the target's 151,936-entry vocabulary, the output layer is almost all of a small draft's
compute; 32,768 entries cover ~99.8% of code tokens. The verifier stays exact: the draft only proposes,
and a token the draft cannot name is simply never proposed.

Files written next to the draft model (in its HF folder and in its IR folder):

- `draft_vocab_map.json`:
    {"format": "fastdraft-draft-vocab-map", "version": 2,
     "target_vocab_size": V,          # the target's vocabulary size (embedding rows)
     "draft_vocab_size": N,           # draft rows that name a target token
     "draft_to_target": [t_0, ..., t_{N-1}],   # strictly increasing target ids: row i is token t_i
     "input": "target" | "draft"}     # which ids the draft READS (version 1 files: "target")
- `draft_vocab_map.npy`: the same `draft_to_target` as int64 [N] (numpy .npy), for fast loading.

Two layouts (what drafting/draft_model.py expects):

- `input: "target"` (reduced output layer): INPUT ids are target ids (the input embedding keeps all V
  rows, config.vocab_size = V); only the output layer is cut to N rows (lm_head.weight [N, h],
  config.draft_vocab_size = N, embeddings untied). Such a folder does not load with a plain
  `from_pretrained` (lm_head shape): use training.draft_folder.load_draft.
- `input: "draft"` (reduced tied vocabulary): a plain causal LM with config.vocab_size = N + 1 and tied
  embeddings. It reads DRAFT ids: target id t_i becomes row i, every other target id becomes the
  "unknown" row N, which the engine never proposes. This is what keeps a 4-layer, 896-wide draft under
  100 MB: the 151,936 x h input embedding alone would be 136 MB in int8.

In both, the engine maps output row i back to target id t_i; for sampling, q over the target vocabulary
is the draft's softmax scattered to `draft_to_target`. A draft without these files reads and scores the
target's own ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAP_JSON = "draft_vocab_map.json"
MAP_NPY = "draft_vocab_map.npy"
FORMAT = "fastdraft-draft-vocab-map"


@dataclass(frozen=True)
class VocabMap:
    draft_to_target: np.ndarray  # [N] int64, strictly increasing
    target_vocab_size: int
    input_reduced: bool = False  # True: the draft reads draft ids (tied N + 1 row vocabulary, see above)

    def __post_init__(self) -> None:
        ids = self.draft_to_target
        assert ids.ndim == 1 and ids.size > 0, "draft_to_target must be a non-empty 1-D array"
        if np.any(np.diff(ids) <= 0):
            raise ValueError("draft_to_target must be strictly increasing")
        if ids[0] < 0 or ids[-1] >= self.target_vocab_size:
            raise ValueError(f"draft_to_target ids must lie in [0, {self.target_vocab_size}), got {ids[0]}..{ids[-1]}")

    @property
    def draft_vocab_size(self) -> int:
        return int(self.draft_to_target.size)

    @property
    def unknown_row(self) -> int | None:
        """The input row of every target token outside the map (input-reduced drafts only)."""
        return self.draft_vocab_size if self.input_reduced else None

    @property
    def model_vocab_size(self) -> int:
        """Rows of the draft's output layer: N, plus the unknown row for an input-reduced draft."""
        return self.draft_vocab_size + (1 if self.input_reduced else 0)

    def input_table(self) -> np.ndarray | None:
        """[V] int64: target id -> the draft's input id (None when the draft reads target ids)."""
        if not self.input_reduced:
            return None
        table = np.full(self.target_vocab_size, self.draft_vocab_size, dtype=np.int64)
        table[self.draft_to_target] = np.arange(self.draft_vocab_size)
        return table

    def label_table(self) -> np.ndarray:
        """[V] int64: target id -> draft output row, -100 (ignored by the loss) for tokens outside the map."""
        table = np.full(self.target_vocab_size, -100, dtype=np.int64)
        table[self.draft_to_target] = np.arange(self.draft_vocab_size)
        return table

    def to_target(self, draft_ids) -> np.ndarray:
        return self.draft_to_target[np.asarray(draft_ids, dtype=np.int64)]

    def coverage(self, counts: np.ndarray) -> float:
        """Fraction of the token occurrences in `counts` ([V] histogram) that the draft can name."""
        total = counts.sum()
        return float(counts[self.draft_to_target].sum() / total) if total else 0.0

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / MAP_NPY, self.draft_to_target.astype(np.int64))
        (folder / MAP_JSON).write_text(json.dumps({
            "format": FORMAT, "version": 2, "target_vocab_size": self.target_vocab_size,
            "draft_vocab_size": self.draft_vocab_size, "input": "draft" if self.input_reduced else "target",
            "draft_to_target": self.draft_to_target.tolist(),
        }) + "\n")


def load(folder: str | Path) -> VocabMap | None:
    """The map saved in `folder`, or None when the draft uses the target's vocabulary directly."""
    path = Path(folder) / MAP_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno} column {error.colno}: {error.msg}") from None
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format must be {FORMAT!r}, got {data.get('format')!r}")
    reads = data.get("input", "target")
    if reads not in ("target", "draft"):
        raise ValueError(f"{path}: input must be 'target' or 'draft', got {reads!r}")
    return VocabMap(np.asarray(data["draft_to_target"], dtype=np.int64), int(data["target_vocab_size"]),
                    input_reduced=reads == "draft")


def select(counts: np.ndarray, size: int, always_keep=()) -> VocabMap:
    """The `size` most frequent ids of the histogram `counts` ([V]), plus `always_keep` (EOS, chat markers).

    Ties break towards the lower id, so the selection is deterministic.
    """
    counts = np.asarray(counts, dtype=np.int64)
    keep = sorted({int(i) for i in always_keep})
    if size < len(keep) + 1 or size > counts.size:
        raise ValueError(f"draft vocab size must be in [{len(keep) + 1}, {counts.size}], got {size}")
    order = np.lexsort((np.arange(counts.size), -counts))  # by count desc, then id asc
    chosen = set(keep)
    for token in order:
        if len(chosen) == size:
            break
        chosen.add(int(token))
    return VocabMap(np.array(sorted(chosen), dtype=np.int64), int(counts.size))
