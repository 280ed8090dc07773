"""Prompt lookup: propose the tokens that followed the last occurrence of the context's trailing n-gram.

No model: drafts cost microseconds, and they shine when the output copies the input (code edits,
summaries, retrieval). Proposals are deterministic, so q is a point mass (None to the verifier).
"""

from __future__ import annotations

import numpy as np

from drafting.sampling import SamplingParams


class PromptLookupProposer:
    name = "prompt-lookup"
    revision = ""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        assert 1 <= min_ngram <= max_ngram
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def new_session(self) -> "PromptLookupSession":
        return PromptLookupSession(self)


class PromptLookupSession:
    def __init__(self, proposer: PromptLookupProposer):
        self.proposer = proposer
        self.last_catch_up_s = 0.0
        self.last_was_copy = False  # its copies are its drafts: k applies

    def propose(self, context: list[int], k: int, params: SamplingParams, rng: np.random.Generator | None,
                stop=None, limit: int | None = None) -> tuple[list[int], None]:  # a lookup scores nothing to ask `stop` with
        if k <= 0:
            return [], None
        return find_continuation(np.asarray(context, dtype=np.int64), k, self.proposer.max_ngram,
                                 self.proposer.min_ngram), None

    def observe(self, num_drafted: int, num_accepted: int) -> None:
        pass

    def close(self) -> None:
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
