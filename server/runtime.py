"""What the server serves: the engine, the target's tokenizer and the identities (name, revision) of the target and
draft; loading them (blocking: call from a worker thread) and swapping the draft.

Boundary: no HTTP here. The app (app.py) owns one Runtime; serving.py reads it; reload.py swaps its draft.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from server.metrics import Metrics
from server.scheduler import Scheduler
from server.settings import Settings

log = logging.getLogger(__name__)

# Special tokens that end a turn in the chat models we ship; used in addition to the tokenizer's eos.
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>")


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    scheduler: Scheduler
    state: str = "loading"  # loading -> ready, or loading -> failed
    error: str | None = None
    engine: Any = None  # drafting Engine
    tokenizer: Any = None  # transformers tokenizer of the target
    target: Any = None  # models.resolve.ResolvedModel
    draft: Any = None  # ResolvedModel of the draft model, None for prompt lookup / no draft
    stop_token_ids: frozenset[int] = frozenset()
    created: int = field(default_factory=lambda: int(time.time()))
    reload_lock: threading.Lock = field(default_factory=threading.Lock)
    capture: Any = None  # server.capture.TrafficCapture when --capture-dir is set

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def model_id(self) -> str:
        if self.settings.served_model_name:
            return self.settings.served_model_name
        return self.target.name if self.target is not None else self.settings.target

    @property
    def has_proposer(self) -> bool:
        return self.engine is not None and self.engine.proposer_name is not None

    def load(self) -> None:
        """Resolve (pull/convert on first start), check and compile the models. Blocking."""
        from transformers import AutoTokenizer

        from drafting.loader import load_engine
        from models.resolve import resolve_model

        s = self.settings
        started = time.perf_counter()
        log.info("resolving target %s (%s weights)", s.target, s.target_weight_format)
        target = resolve_model(s.target, weight_format=s.target_weight_format, pull=s.pull)
        draft = None
        if s.proposer_mode == "draft":
            log.info("resolving draft %s (%s weights)", s.draft, s.draft_weight_format)
            draft = resolve_model(s.draft, weight_format=s.draft_weight_format, pull=s.pull)
            # load_engine -> load_proposer checks the draft's vocabulary against the target's
        tokenizer = AutoTokenizer.from_pretrained(str(target.tokenizer_dir))
        log.info("compiling models (proposer: %s)", s.proposer_mode)
        engine = load_engine(target, draft, prompt_lookup=s.proposer_mode == "prompt-lookup" or (draft is not None and s.draft_with_lookup),
                             num_draft_tokens=s.num_draft_tokens, adaptive=s.adaptive, precision=s.precision,
                             max_running=s.max_running, speculative_max_concurrency=s.spec_max_running,
                             copy_tokens=s.copy_tokens, prefix_caching=s.prefix_caching,
                             kv_cache_bytes=int(s.kv_cache_gb * 2 ** 30) if s.kv_cache_gb else None)
        engine.step_listeners.append(self.metrics.record_engine_step)
        self.metrics.watch_engine(engine)
        self.tokenizer, self.target, self.draft, self.engine = tokenizer, target, draft, engine
        self.stop_token_ids = frozenset(engine.eos_token_ids) | end_of_turn_ids(tokenizer)
        if s.capture_dir:
            from server.capture import TrafficCapture

            self.capture = TrafficCapture(s.capture_dir, self.metrics, s.capture_max_bytes, s.capture_sample,
                                          s.capture_top_logprobs)
            log.info("capturing %.0f%% of choices to %s (at most %d bytes)", 100 * s.capture_sample, s.capture_dir,
                     s.capture_max_bytes)
        self.state = "ready"
        self.publish_models()
        log.info("ready in %.1fs: target %s (rev %s), proposer %s, max context %d", time.perf_counter() - started,
                 target.name, target.revision, engine.proposer_name, engine.max_context)

    def close(self) -> None:
        """At shutdown: write what the capture still holds."""
        if self.capture is not None:
            self.capture.close()

    def publish_models(self) -> None:
        draft_name = self.draft.name if self.draft is not None else ""
        draft_revision = self.draft.revision if self.draft is not None else ""
        self.metrics.set_models(self.target.name if self.target else self.settings.target,
                                self.target.revision if self.target else "", draft_name, draft_revision,
                                self.engine.proposer_name if self.engine else "", self.ready)

    def describe(self) -> dict:
        return {
            "target": {"name": self.target.name, "revision": self.target.revision} if self.target else None,
            "draft": {"name": self.draft.name, "revision": self.draft.revision} if self.draft else None,
            "proposer": self.engine.proposer_name if self.engine else None,
        }


def end_of_turn_ids(tokenizer: Any) -> frozenset[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in _END_OF_TURN:
        if token in vocab:
            ids.add(int(vocab[token]))
    return frozenset(ids)
