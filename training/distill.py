"""The logit-level distillation loss: KL from the target's captured top-K distribution to the draft's.

Boundary: torch only; one function of logits and the captured rows. The trainer (training/trainer.py) mixes it
with cross-entropy on the served token: loss = (1 - w) * CE + w * KL, w = --kd-weight (0: sequence-level KD).

The capture keeps, per position, the target's K most likely tokens and their log-probabilities. Those K
buckets plus one "remainder" bucket (all other tokens, probability 1 - sum of the K) are an exact coarsening of
the target's distribution; the draft's probabilities are coarsened the same way (its softmax at the K ids, and
the rest as the remainder), and KL(p || q) is taken over the K + 1 buckets. A top-K token the draft cannot
name (outside a reduced vocabulary, id -1) adds its probability to the target's remainder: the draft can never
propose it, so the best it can do is to put that mass on "other".
"""

from __future__ import annotations

import torch

_FLOOR = 1e-6  # smallest remainder probability (keeps log finite when the K buckets hold all the mass)


def topk_kl_sum(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Sum over positions of KL(target || draft) on K + 1 buckets.

    logits [B, T, V] (the draft's, any dtype); top_ids [B, T, K] int64 draft output rows, -1 for none;
    top_logprobs [B, T, K] float. Positions whose row holds no id (prompt, padding) add nothing.
    """
    valid = top_ids >= 0
    present = valid.any(dim=-1)  # [B, T]: positions that carry a captured distribution
    if not bool(present.any()):
        return logits.sum() * 0.0
    rows = logits[present].float()  # [N, V]
    ids, p_log, mask = top_ids[present].clamp(min=0), top_logprobs[present].float(), valid[present]
    q_log_all = torch.log_softmax(rows, dim=-1)
    q_log = q_log_all.gather(1, ids)  # [N, K]
    p = torch.where(mask, p_log.exp(), torch.zeros_like(p_log))
    q = torch.where(mask, q_log.exp(), torch.zeros_like(q_log))
    p_rest = (1.0 - p.sum(-1)).clamp(min=_FLOOR)
    q_rest = (1.0 - q.sum(-1)).clamp(min=_FLOOR)
    buckets = torch.where(mask, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)
    return (buckets + p_rest * (p_rest.log() - q_rest.log())).sum()
