"""Proposer backed by a small draft LM on the OpenVINO runtime.

Each generation gets a `DraftModelSession` with its own draft KV cache. The draft's cache follows the
verified context lazily: at each `propose` it keeps the longest prefix it shares with the context (the
rejected tail is masked, see kv_session.py) and feeds what is new, usually the accepted tokens plus the
target's correction.

A draft may have a reduced vocabulary (only the most frequent target tokens): its IR folder then holds
`draft_vocab_map.json` (format in training/vocab_map.py), `{"draft_to_target": [target id of draft row 0,
1, ...], "input": "target" | "draft"}`. With "target" only the output layer is cut and the draft reads
target ids; with "draft" the draft also reads draft ids (target ids outside the map read as the
"unknown" row N, which is never proposed). Outputs are always mapped back, so the verifier sees target
ids and stays exact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from drafting.kv_session import KVSession
from drafting.ov_model import StatefulCausalLM
from drafting.proposer import DraftStop
from drafting.sampling import SamplingParams, probabilities, sample

VOCAB_MAP_FILE = "draft_vocab_map.json"


class DraftModelProposer:
    def __init__(self, model: StatefulCausalLM, target_vocab_size: int, revision: str = ""):
        self.model = model
        self.name = model.name
        self.revision = revision
        self.target_vocab_size = target_vocab_size
        self.draft_to_target, self.unknown_row = load_vocab_map(model.ir_dir, model.vocab_size, target_vocab_size)
        self.target_to_draft: np.ndarray | None = None  # [V] input ids, for a draft that reads draft ids
        if self.unknown_row is not None:
            self.target_to_draft = np.full(target_vocab_size, self.unknown_row, dtype=np.int64)
            self.target_to_draft[self.draft_to_target] = np.arange(self.draft_to_target.size)

    def new_session(self) -> "DraftModelSession":
        return DraftModelSession(self)


def load_vocab_map(ir_dir: Path, draft_vocab: int, target_vocab: int) -> tuple[np.ndarray | None, int | None]:
    """(draft row -> target id map or None, the unknown row of a draft that reads draft ids or None)."""
    path = Path(ir_dir) / VOCAB_MAP_FILE
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text())
    mapping = np.asarray(data["draft_to_target"], dtype=np.int64)
    reads = data.get("input", "target")
    if reads not in ("target", "draft"):
        raise ValueError(f"{path}: input must be 'target' or 'draft', got {reads!r}")
    expected_rows = mapping.shape[0] + (1 if reads == "draft" else 0)
    if draft_vocab != expected_rows:
        raise ValueError(f"{path}: draft_to_target has {mapping.shape[0]} entries (input {reads!r}: {expected_rows} "
                         f"output rows expected), the draft's output layer has {draft_vocab}")
    if mapping.min() < 0 or mapping.max() >= target_vocab:
        raise ValueError(f"{path}: draft_to_target ids must be in [0, {target_vocab}), got [{mapping.min()}, {mapping.max()}]")
    return mapping, (mapping.shape[0] if reads == "draft" else None)


def top_probability(logits: np.ndarray, row: int) -> float:
    """softmax(logits)[row]; with row the argmax, every exponent is <= 0, so nothing overflows."""
    return float(1.0 / np.exp(logits - logits[row], dtype=np.float32).sum())


class DraftModelSession:
    def __init__(self, proposer: DraftModelProposer):
        self.proposer = proposer
        self.cache = KVSession(proposer.model)
        self.last_catch_up_s = 0.0  # time of the last propose's first call, which feeds what the draft had not seen
        self.last_was_copy = False

    def propose(self, context: list[int], k: int, params: SamplingParams, rng: np.random.Generator | None,
                stop: DraftStop | None = None, limit: int | None = None) -> tuple[list[int], np.ndarray | None]:
        """Up to k draft tokens; after each, `stop` (if given) hears the probability the draft gave it."""
        proposer = self.proposer
        if k <= 0:
            self.last_catch_up_s = 0.0
            return [], None
        if proposer.target_to_draft is not None:
            context = proposer.target_to_draft[np.asarray(context, dtype=np.int64)].tolist()
        kept = self.cache.sync(context)
        start = time.perf_counter()
        logits = self.cache.forward(context[kept:], 1)[0]  # [draft vocab]
        self.last_catch_up_s = time.perf_counter() - start
        ids: list[int] = []
        q_rows: list[np.ndarray] = []
        for i in range(k):
            if proposer.unknown_row is not None:
                logits[proposer.unknown_row] = -np.inf  # "some rare token" names nothing the target can verify
            if params.greedy:
                row = int(logits.argmax())
                probability = top_probability(logits, row) if stop is not None else 1.0
            else:
                q = probabilities(logits, params)
                row = sample(q, rng)
                q_rows.append(self._to_target_vocab(q))
                probability = float(q[row])
            token = row if proposer.draft_to_target is None else int(proposer.draft_to_target[row])
            ids.append(token)
            if stop is not None and not stop.keep_drafting(probability):
                break  # this token is still offered (its cost is paid); the next draft call is saved
            if i < k - 1:
                logits = self.cache.forward([row if proposer.target_to_draft is not None else token], 1)[0]
        return ids, (np.stack(q_rows) if q_rows else None)

    def _to_target_vocab(self, q: np.ndarray) -> np.ndarray:
        mapping = self.proposer.draft_to_target
        if mapping is None and q.shape[0] == self.proposer.target_vocab_size:
            return q
        full = np.zeros(self.proposer.target_vocab_size, dtype=q.dtype)
        if mapping is None:
            full[:q.shape[0]] = q  # draft vocab padded shorter than the target's
        else:
            full[mapping] = q[:mapping.size]  # an input-reduced draft's unknown row has q = 0
        return full

    def observe(self, num_drafted: int, num_accepted: int) -> None:
        pass

    def close(self) -> None:
        self.cache.reset()
