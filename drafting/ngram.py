"""Prompt lookup: propose the tokens that followed the last occurrence of the context's trailing n-gram.

No model: drafts cost microseconds, and they shine when the output copies the input (code edits,
summaries, retrieval). Proposals are deterministic, so q is a point mass (None to the verifier).
"""

from __future__ import annotations

import numpy as np

from drafting.proposer import Draft, DraftSlot


class PromptLookupProposer:
    name = "prompt-lookup"
    revision = ""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        assert 1 <= min_ngram <= max_ngram
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, slots: list[DraftSlot]) -> list[Draft]:
        """Its copies are its drafts: k applies (a slot at k = 0 gets none)."""
        return [Draft(find_continuation(np.asarray(slot.context, dtype=np.int64), slot.k, self.max_ngram,
                                        self.min_ngram) if slot.k > 0 else [])
                for slot in slots]

    def release(self, seq_id: int) -> None:
        pass

    def forget_cached(self) -> None:
        pass


def find_continuation(context: np.ndarray, k: int, max_ngram: int, min_ngram: int) -> list[int]:
    """The k tokens after the most recent earlier match of the longest trailing n-gram (n >= min_ngram)."""
    length = len(context)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        pattern = context[length - n:]
        # candidate starts s with context[s:s+n] == pattern and s + n < length (something follows)
        windows = np.lib.stride_tricks.sliding_window_view(context[:length - 1], n)
        matches = np.flatnonzero((windows == pattern).all(axis=1))
        if len(matches):
            start = int(matches[-1]) + n
            return context[start:start + k].tolist()
    return []
