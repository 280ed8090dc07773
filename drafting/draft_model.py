"""Proposer backed by a small draft LM in paged form: one draft call per draft position for all sequences.

Each sequence gets a block table in the draft's own block pool. The draft's cache follows the verified
context lazily: at each step it keeps the longest prefix it shares with the context (rolled back by a
shorter length, as the target's) and its first call feeds what is new, usually the accepted tokens plus
the target's correction (the whole prompt on a sequence's first step). Then one call per further position
feeds every still-drafting sequence its last drafted token.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drafting.blocks import BlockTable, NoFreeBlocks
from drafting.paged_model import PagedBatch, PagedCausalLM
from drafting.proposer import Draft, DraftSlot
from drafting.sampling import probabilities, sample
from drafting.seeded_noise import gumbel_pick

VOCAB_MAP_FILE = "draft_vocab_map.json"


@dataclass
class _DraftSequence:
    table: BlockTable
    fed: list[int] = field(default_factory=list)  # draft-side ids whose KV the table holds


class DraftModelProposer:
    def __init__(self, model: PagedCausalLM, target_vocab_size: int, revision: str = ""):
        self.model = model
        self.name = model.name
        self.revision = revision
        self.target_vocab_size = target_vocab_size
        self.pool = model.pool
        self.draft_to_target, self.unknown_row = load_vocab_map(model.ir_dir, model.vocab_size, target_vocab_size)
        self.target_to_draft: np.ndarray | None = None  # [V] input ids, for a draft that reads draft ids
        if self.unknown_row is not None:
            self.target_to_draft = np.full(target_vocab_size, self.unknown_row, dtype=np.int64)
            self.target_to_draft[self.draft_to_target] = np.arange(self.draft_to_target.size)
        # target id of each draft output row, to read a seeded request's noise (an input-reduced draft's
        # unknown row maps to 0: its q is 0 there)
        self._row_targets: np.ndarray | None = None
        if self.draft_to_target is not None:
            self._row_targets = np.zeros(model.vocab_size, dtype=np.int64)
            self._row_targets[:self.draft_to_target.size] = self.draft_to_target
        self._sequences: dict[int, _DraftSequence] = {}
        self.calls = 0  # draft model calls made (tests: a proposer at k = 0 must not run the model)
        # the last propose()'s calls: seconds each and tokens fed in each (the engine's cost model reads them)
        self.call_seconds: list[float] = []
        self.call_tokens: list[int] = []

    def release(self, seq_id: int) -> None:
        sequence = self._sequences.pop(seq_id, None)
        if sequence is not None:
            sequence.table.release()

    def forget_cached(self) -> None:
        for seq_id in list(self._sequences):
            self.release(seq_id)

    def propose(self, slots: list[DraftSlot]) -> list[Draft]:
        drafts = [Draft() for _ in slots]
        q_rows: list[list[np.ndarray]] = [[] for _ in slots]  # stacked once drafting ends
        active: list[int] = []  # indices into slots still drafting
        batch = PagedBatch([], [], [], [])
        for index, slot in enumerate(slots):
            if slot.k <= 0:
                continue
            context = slot.context
            if self.target_to_draft is not None:
                context = self.target_to_draft[np.asarray(context, dtype=np.int64)].tolist()
            sequence = self._sequences.get(slot.seq_id)
            if sequence is None:
                sequence = self._sequences[slot.seq_id] = _DraftSequence(BlockTable(self.pool))
            kept = _common_prefix(sequence.fed, context, len(context) - 1)
            sequence.table.truncate(kept)
            del sequence.fed[kept:]
            try:
                sequence.table.reserve(len(context) + slot.k - 1)
            except NoFreeBlocks:  # the draft's pool is full: this sequence goes without a draft this step
                continue
            batch.tokens.append(context[kept:])
            batch.past_lens.append(kept)
            batch.block_tables.append(sequence.table.blocks)
            batch.logit_rows.append(1)
            sequence.fed.extend(context[kept:])
            active.append(index)
        position = 0
        self.call_seconds, self.call_tokens = [], []
        while active:
            start = time.perf_counter()
            logits = self.model.forward(batch)  # [len(active), draft vocab]
            self.call_seconds.append(time.perf_counter() - start)
            self.call_tokens.append(sum(len(tokens) for tokens in batch.tokens))
            self.calls += 1
            batch = PagedBatch([], [], [], [])
            still: list[int] = []
            for row, index in zip(logits, active):
                slot, draft = slots[index], drafts[index]
                token, draft_row, q = self._pick(row, slot, len(slot.context) + position)
                draft.ids.append(token)
                if q is not None:
                    q_rows[index].append(q)
                if position + 1 >= slot.k:
                    continue  # this slot's last token: it is offered, and nothing more is fed for it
                sequence = self._sequences[slot.seq_id]
                fed = draft_row if self.target_to_draft is not None else token
                batch.tokens.append([fed])
                batch.past_lens.append(len(sequence.fed))
                batch.block_tables.append(sequence.table.blocks)
                batch.logit_rows.append(1)
                sequence.fed.append(fed)
                still.append(index)
            active = still
            position += 1
        for slot, draft, rows in zip(slots, drafts, q_rows):
            sequence = self._sequences.get(slot.seq_id)
            if sequence is not None:
                sequence.table.length = len(sequence.fed)  # the table's length follows what was fed
            if rows:
                draft.q = np.stack(rows)
        return drafts

    def _pick(self, logits: np.ndarray, slot: DraftSlot, position: int) -> tuple[int, int, np.ndarray | None]:
        """(target id, draft row, q over the target vocabulary for rejection sampling, or None)."""
        if self.unknown_row is not None:
            logits[self.unknown_row] = -np.inf  # "some rare token" names nothing the target can verify
        params, q_full = slot.params, None
        if params.greedy:
            row = int(logits.argmax())
        else:
            q = probabilities(logits, params)
            if slot.noise is not None:  # seeded: pick with the target's noise at this position (coupled)
                noise = slot.noise(position)
                row = gumbel_pick(q, noise if self._row_targets is None else noise[self._row_targets])
            else:
                row = sample(q, slot.rng)
                q_full = self._to_target_vocab(q)
        token = row if self.draft_to_target is None else int(self.draft_to_target[row])
        return token, row, q_full

    def _to_target_vocab(self, q: np.ndarray) -> np.ndarray:
        mapping = self.draft_to_target
        if mapping is None and q.shape[0] == self.target_vocab_size:
            return q
        full = np.zeros(self.target_vocab_size, dtype=q.dtype)
        if mapping is None:
            full[:q.shape[0]] = q  # draft vocab padded shorter than the target's
        else:
            full[mapping] = q[:mapping.size]  # an input-reduced draft's unknown row has q = 0
        return full


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    limit = min(len(a), len(b), limit)
    common = 0
    while common < limit and a[common] == b[common]:
        common += 1
    return common


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
