"""Draft hot reload: POST /admin/reload and SIGHUP re-read the draft from its path (where `python -m training.align`
publishes) and swap it into the engine.

In-flight generations keep the proposer they started with (the engine guarantees it); new ones get the new draft.
A draft that fails to resolve, compile or pass the vocabulary check is refused with the reason, and the old
draft keeps serving. One reload at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server import errors
from server.runtime import Runtime

log = logging.getLogger(__name__)


async def reload_draft(runtime: Runtime, spec: str | None = None) -> dict:
    """Reload the draft from `spec` (default: the configured draft path); returns the new identities."""
    if runtime.settings.proposer_mode != "draft":
        raise errors.invalid(f"this server has no draft model to reload (proposer: {runtime.settings.proposer_mode})",
                             "draft", "no_draft_model")
    if not runtime.ready:
        raise errors.not_ready(runtime.error or "models are still loading")
    if runtime.reload_lock.locked():
        raise errors.APIError(409, "a draft reload is already running", "invalid_request_error", None, "reload_in_progress")
    return await asyncio.to_thread(_reload_blocking, runtime, spec or runtime.settings.draft)


def _reload_blocking(runtime: Runtime, spec: str) -> dict:
    from drafting.loader import build_proposer
    from models.resolve import resolve_model

    s = runtime.settings
    with runtime.reload_lock:
        old = runtime.draft
        started = time.perf_counter()
        try:
            draft = resolve_model(spec, weight_format=s.draft_weight_format, pull=s.pull)
            proposer = build_proposer(runtime.target, draft, s.draft_with_lookup, copy_tokens=s.copy_tokens,
                                      precision=s.precision, num_blocks=runtime.engine.target.num_blocks)
        except Exception as error:  # any failure keeps the old draft: the server must not lose its proposer
            runtime.metrics.reloads.labels("failed").inc()
            log.error("draft reload from %s refused (%s: %s); still serving %s (rev %s)", spec,
                      type(error).__name__, error, old.name if old else None, old.revision if old else None)
            raise errors.APIError(
                400, f"draft reload from '{spec}' failed: {type(error).__name__}: {error}; still serving draft "
                     f"'{old.name if old else None}' (revision {old.revision if old else None})",
                "invalid_request_error", "draft", "draft_reload_failed") from None
        runtime.engine.set_proposer(proposer)
        runtime.draft = draft
        s.draft = spec
        runtime.metrics.reloads.labels("ok").inc()
        runtime.publish_models()
        log.info("draft reloaded from %s in %.1fs: %s rev %s -> %s rev %s", spec, time.perf_counter() - started,
                 old.name if old else None, old.revision if old else None, draft.name, draft.revision)
        return {"status": "reloaded", "previous": {"name": old.name, "revision": old.revision} if old else None,
                **runtime.describe()}


def on_sighup(runtime: Runtime) -> None:
    """Signal handler (event loop): reload in the background; the outcome goes to the log and /metrics."""

    async def run() -> None:
        try:
            await reload_draft(runtime)
        except errors.APIError as error:
            log.error("SIGHUP reload: %s", error.message)
        except Exception:
            log.exception("SIGHUP reload failed")

    log.info("SIGHUP: reloading the draft from %s", runtime.settings.draft)
    task = asyncio.get_running_loop().create_task(run())
    _background.add(task)  # keep a reference until done (the loop only holds a weak one)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task] = set()
