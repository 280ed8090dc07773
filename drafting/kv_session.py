"""One KV cache of a stateful OpenVINO LM, with rollback by masking.

Rolling back a stateful IR by reading and rewriting its state tensors costs tens of ms per step, so a
rejected draft token stays in the cache and is masked out instead: its `attention_mask` entry becomes 0
and later tokens get `position_ids` that continue the kept (logical) sequence. The cache therefore holds
"physical" slots, some masked; `compact()` rewrites the state without them when the waste grows.

Boundary: token ids in, logits out. Knows nothing about drafting or sampling.
"""

from __future__ import annotations

import numpy as np
import openvino as ov

from drafting.ov_model import NUM_LOGITS_INPUT, StatefulCausalLM

COMPACT_MIN_WASTE = 128  # masked slots tolerated before compacting (attention over them is cheap)
COMPACT_WASTE_FRACTION = 0.25  # ... and above this fraction of the cache


class KVSession:
    # Compaction thresholds; an instance may lower them (scripts/exactness_ab.py sets both to 0 to keep the
    # cache free of masked slots, which is what makes greedy output bit-identical at reduced precision).
    compact_min_waste = COMPACT_MIN_WASTE
    compact_waste_fraction = COMPACT_WASTE_FRACTION

    def __init__(self, model: StatefulCausalLM):
        self.model = model
        self.request = model.compiled.create_infer_request()
        self.tokens: list[int] = []  # logical sequence whose K/V are in the cache (unmasked)
        self._capacity = 1024
        self._mask = np.zeros(self._capacity, dtype=np.int64)  # per physical slot: 1 kept, 0 masked
        self._slot = np.zeros(self._capacity, dtype=np.int64)  # physical slot of each logical position
        self._physical = 0  # physical slots in use
        # Inputs that keep their shape are set once and updated in place; the others are wrapped around
        # numpy memory each call, then start_async/wait. Against infer() with an input dict this saved
        # 0.4 ms per one-token call on the 0.5B and on smollm2-135m (1-3% of their steps), paired A/B.
        self._num_logits = ov.Tensor(ov.Type.i64, [1])
        self.request.set_tensor(NUM_LOGITS_INPUT, self._num_logits)
        beam_idx = ov.Tensor(ov.Type.i32, [1])
        beam_idx.data[:] = 0
        self.request.set_tensor("beam_idx", beam_idx)
        self.compactions = 0

    @property
    def masked_slots(self) -> int:
        return self._physical - len(self.tokens)

    def reset(self) -> None:
        self.request.reset_state()
        self.tokens.clear()
        self._mask[:] = 0
        self._physical = 0

    def forward(self, token_ids: list[int], num_logits: int = 1) -> np.ndarray:
        """Append token_ids to the cache; return logits of the last num_logits of them.

        Returns [num_logits, vocab], a view into the request's output: use it before the next forward.
        """
        n = len(token_ids)
        assert n >= 1 and 1 <= num_logits <= n, (n, num_logits)
        if self._physical + n > self._capacity:
            self._grow(self._physical + n)
        start_logical, start_physical = len(self.tokens), self._physical
        self._mask[start_physical:start_physical + n] = 1
        self._slot[start_logical:start_logical + n] = np.arange(start_physical, start_physical + n)
        self._physical += n
        request = self.request
        input_ids = np.asarray(token_ids, dtype=np.int64)[None, :]
        position_ids = np.arange(start_logical, start_logical + n, dtype=np.int64)[None, :]
        request.set_tensor("input_ids", ov.Tensor(input_ids, shared_memory=True))
        request.set_tensor("attention_mask", ov.Tensor(self._mask[None, :self._physical], shared_memory=True))
        request.set_tensor("position_ids", ov.Tensor(position_ids, shared_memory=True))
        self._num_logits.data[0] = num_logits
        request.start_async()
        request.wait()
        self.tokens.extend(token_ids)
        return request.get_tensor("logits").data[0]

    def truncate(self, length: int) -> None:
        """Keep the first `length` logical tokens; mask the rest."""
        assert 0 <= length <= len(self.tokens)
        if length == len(self.tokens):
            return
        if length == 0:
            self.reset()
            return
        self._mask[self._slot[length:len(self.tokens)]] = 0
        del self.tokens[length:]
        if self.masked_slots > max(self.compact_min_waste, self.compact_waste_fraction * self._physical):
            self.compact()

    def sync(self, context: list[int]) -> int:
        """Keep the longest cached prefix of `context`, leaving at least its last token to be fed.

        Returns the number of context tokens already in the cache (prefix reuse across requests).
        """
        limit = min(len(self.tokens), len(context) - 1)
        common = 0
        while common < limit and self.tokens[common] == context[common]:
            common += 1
        self.truncate(common)
        return common

    def compact(self) -> None:
        """Rewrite every KV state without its masked slots (slow: done only when waste is large)."""
        if self.masked_slots == 0:
            return
        keep = self._slot[:len(self.tokens)].copy()
        for state in self.request.query_state():
            axis = self.model.kv_seq_axes.get(state.name, 2)
            values = state.state.data
            state.state = ov.Tensor(np.ascontiguousarray(np.take(values, keep, axis=axis)))
        count = len(keep)
        self._mask[:] = 0
        self._mask[:count] = 1
        self._slot[:count] = np.arange(count)
        self._physical = count
        self.compactions += 1

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self._capacity)
        for name in ("_mask", "_slot"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=np.int64)
            new[:len(old)] = old
            setattr(self, name, new)
        self._capacity = capacity
