"""Per-position Gumbel noise for seeded sampling: the same seed gives the same text, speculation or not.

Sampling token t from p as argmax(log p + g_t), with g_t i.i.d. Gumbel noise, is an exact draw from p
(the Gumbel-max trick). When g_t depends only on (seed, position t), the token at each position is a
function of the seed and the target's distribution there, and of nothing else: not of how many tokens were
drafted, which draft proposed them, what else ran in the batch, or whether speculation was on. A draft
coupled to the same noise (its pick is argmax(log q + g_t)) is accepted exactly when it names the token
the target would have picked, so verification is a match test and stays exact. It accepts less often
than rejection sampling's min(1, p/q) (the coupling is not the optimal one), so the engine uses it only
for requests that set a seed; unseeded sampling keeps rejection sampling.

Boundary: numbers only; knows nothing about models or requests.
"""

from __future__ import annotations

import numpy as np


class SeededNoise:
    """Gumbel rows for one seeded sequence, made on demand and kept while they may be asked for again."""

    def __init__(self, seed: int, vocab_size: int):
        self.seed = int(seed) & (2 ** 63 - 1)
        self.vocab_size = vocab_size
        self._rows: dict[int, np.ndarray] = {}

    def __call__(self, position: int) -> np.ndarray:
        """Noise for the token at `position` of the sequence (prompt included), [vocab] float64."""
        row = self._rows.get(position)
        if row is None:
            row = np.random.default_rng([self.seed, position]).gumbel(size=self.vocab_size)
            self._rows[position] = row
        return row

    def forget_before(self, position: int) -> None:
        """Drop the rows of positions already decided."""
        for done in [p for p in self._rows if p < position]:
            del self._rows[done]


def gumbel_pick(probabilities: np.ndarray, noise: np.ndarray) -> int:
    """argmax(log p + g) over the support of p: an exact draw from p for Gumbel g."""
    with np.errstate(divide="ignore"):
        scores = np.log(probabilities) + noise[:probabilities.shape[-1]]
    return int(scores.argmax())
