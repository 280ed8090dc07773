"""Build an Engine from resolved model folders: compile the target, attach a proposer, check vocabularies.

Boundary: takes `models.resolve.ResolvedModel`s (anything with name, ir_dir, tokenizer_dir, revision),
returns ready engines and proposers. The only place that reads a model folder's generation config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from drafting.draft_model import DraftModelProposer
from drafting.draft_with_lookup import COPY_TOKENS, DraftWithLookupProposer
from drafting.engine import Engine, EngineConfig
from drafting.errors import EngineError
from drafting.ngram import PromptLookupProposer
from drafting.paged_model import PagedCausalLM
from drafting.proposer import Proposer

log = logging.getLogger(__name__)


def default_kv_cache_bytes() -> int:
    """A tenth of this machine's memory, at most 2 GiB: ~73k tokens of the 1.5B target's KV at 16 bits."""
    try:
        import os

        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2 ** 30
    return int(min(total // 10, 2 * 2 ** 30))


def compile_model(model, precision: str | None = None, kv_cache_bytes: int | None = None,
                  num_blocks: int | None = None) -> PagedCausalLM:
    from models.home import fastdraft_home

    return PagedCausalLM(model.ir_dir, num_blocks=num_blocks, kv_cache_bytes=kv_cache_bytes or default_kv_cache_bytes(),
                         precision=precision, cache_dir=fastdraft_home() / "ov-cache", name=model.name)


def load_engine(target, draft=None, prompt_lookup: bool = False, num_draft_tokens: int = 3,
                adaptive: bool = True, precision: str | None = None, max_running: int = 8,
                speculative_max_concurrency: int | None = None, copy_tokens: int = COPY_TOKENS,
                kv_cache_bytes: int | None = None, prefix_caching: bool = True) -> Engine:
    """A target engine with the proposer build_proposer() makes of `draft` and `prompt_lookup`."""
    target_model = compile_model(target, precision, kv_cache_bytes)
    proposer = build_proposer(target, draft, prompt_lookup, copy_tokens=copy_tokens, precision=precision,
                              target_vocab_size=target_model.vocab_size, num_blocks=target_model.num_blocks)
    config = EngineConfig(num_draft_tokens=num_draft_tokens, adaptive=adaptive, max_running=max_running,
                          speculative_max_concurrency=speculative_max_concurrency, prefix_caching=prefix_caching)
    return Engine(target_model, proposer, config, eos_token_ids=eos_token_ids(target.ir_dir))


def build_proposer(target, draft=None, prompt_lookup: bool = False, copy_tokens: int = COPY_TOKENS,
                   precision: str | None = None, target_vocab_size: int | None = None,
                   num_blocks: int | None = None) -> Proposer | None:
    """The proposer of a served configuration: the draft model, the draft with prompt lookup (both given), prompt
    lookup alone (no draft), or none. The one place that decides how they combine, for load and reload alike."""
    if draft is None:
        return PromptLookupProposer() if prompt_lookup else None
    proposer = load_proposer(draft, target, precision=precision, target_vocab_size=target_vocab_size,
                             num_blocks=num_blocks)
    return DraftWithLookupProposer(proposer, copy_tokens=copy_tokens) if prompt_lookup else proposer


def load_proposer(draft, target, precision: str | None = None, target_vocab_size: int | None = None,
                  num_blocks: int | None = None) -> DraftModelProposer:
    """Compile a draft model after checking it shares the target's vocabulary (raises on mismatch).

    num_blocks: the draft's KV blocks, as many as the target's so it can follow every sequence the target holds."""
    from models.compat import check_compatible

    check_compatible(target.tokenizer_dir, draft.tokenizer_dir)
    model = compile_model(draft, precision, num_blocks=num_blocks)
    if target_vocab_size is None:
        target_vocab_size = PagedCausalLM.output_vocab_size(target.ir_dir)
    proposer = DraftModelProposer(model, target_vocab_size, revision=draft.revision)
    if proposer.draft_to_target is None and model.vocab_size > target_vocab_size:
        raise EngineError(f"draft {draft.name} scores {model.vocab_size} tokens but the target only "
                          f"{target_vocab_size}: it could propose ids the target cannot verify")
    return proposer


def eos_token_ids(ir_dir: str | Path) -> frozenset[int]:
    """EOS ids from the model folder's generation_config.json (falling back to config.json)."""
    for name in ("generation_config.json", "config.json"):
        path = Path(ir_dir) / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if value is not None:
                return frozenset(value if isinstance(value, list) else [value])
    return frozenset()
