"""Prometheus metrics (prometheus-client), named like vLLM's with the `fastdraft:` prefix so dashboards and
PromQL written for vLLM's speculative-decoding counters carry over.

Counters only move forward; ratios (acceptance rate, mean accepted length, speedup) are derived in PromQL
(README and dashboards/grafana-fastdraft.json). One registry per app, so tests can build several apps.

Definitions (docs/formulas.md):
- a *draft* is one verifying target call that checked >= 1 proposed token;
- accepted_tokens_per_pos{position=i} counts drafts whose token i was accepted (drafting stops at the first
  rejection, so position i is only tested when 0..i-1 were accepted);
- draft_tokens_per_pos{position=i} counts drafts that proposed a token at position i;
- reached_tokens_per_pos{position=i} counts drafts whose token i was compared (0..i-1 accepted), so
  accepted_per_pos / reached_per_pos is the acceptance at position i and sum(accepted) / sum(reached) is alpha;
- emitted tokens = tokens those verifying calls added to the output (accepted + the target's own token).

Labels, one meaning each:
- step (target_calls, spec_decode_target_verify_seconds): what one sequence's step did, `speculative` (it
  verified >= 1 draft token) or `plain` (it decoded one token);
- speculation (time_to_first_token_seconds): how the request was admitted, `enabled` or `disabled` (as its
  usage.speculative.enabled), known before its first token;
- mode (time_per_output_token_seconds): how the request ran, `speculative` (at least one of its steps verified
  draft tokens) or `plain` (none did: speculation disabled, or a draft length of 0 at every step).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from drafting.request import MAX_DRAFT_TOKENS
from drafting.stats import StepStats

P = "fastdraft:"

# seconds; from one fast decode step of a 135M model to a minutes-long request
_LATENCY = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_STEP = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_K = (0, 1, 2, 3, 4, 5, 6, 8, 12, 16)
_TPOT = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST
CAPTURE_STAGES = ("score", "record", "write")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # --- speculative decoding (vLLM: vllm:spec_decode_*)
        self.drafts = Counter(P + "spec_decode_num_drafts", "Verifying target calls that checked at least one draft token", registry=r)
        self.draft_tokens = Counter(P + "spec_decode_num_draft_tokens", "Draft tokens proposed", registry=r)
        self.accepted_tokens = Counter(P + "spec_decode_num_accepted_tokens", "Draft tokens accepted by the target", registry=r)
        self.emitted_tokens = Counter(P + "spec_decode_num_emitted_tokens",
                                      "Tokens emitted by verifying calls (accepted + the target's correction/bonus token)", registry=r)
        self.accepted_per_pos = Counter(P + "spec_decode_num_accepted_tokens_per_pos",
                                        "Drafts whose token at this 0-based position was accepted", ["position"], registry=r)
        self.drafted_per_pos = Counter(P + "spec_decode_num_draft_tokens_per_pos",
                                       "Drafts that proposed a token at this 0-based position", ["position"], registry=r)
        self.reached_per_pos = Counter(P + "spec_decode_num_reached_tokens_per_pos",
                                       "Drafts whose token at this 0-based position was compared with the target "
                                       "(all earlier ones accepted); accepted_per_pos / reached_per_pos = acceptance "
                                       "at this position, sum(accepted) / sum(reached) = alpha", ["position"], registry=r)
        self.target_calls = Counter(P + "target_calls", "Target forward calls after prefill, by step: speculative (verified "
                                    "draft tokens) or plain (decoded one token)", ["step"], registry=r)
        self.current_k = Gauge(P + "spec_decode_current_k", "Draft length k of the most recent verifying step (0: plain decoding)", registry=r)
        self.draft_step = Histogram(P + "spec_decode_draft_step_seconds", "Time to propose one draft (all k tokens)", buckets=_STEP, registry=r)
        self.target_verify = Histogram(P + "spec_decode_target_verify_seconds", "Time of one target call, by step: "
                                       "speculative (verify k+1 tokens) or plain (one decode step)",
                                       ["step"], buckets=_STEP, registry=r)
        for position in range(MAX_DRAFT_TOKENS):  # pre-create so rate() works from the first scrape
            self.accepted_per_pos.labels(str(position))
            self.drafted_per_pos.labels(str(position))
            self.reached_per_pos.labels(str(position))
        for step in ("speculative", "plain"):
            self.target_calls.labels(step)
            self.target_verify.labels(step)
        # --- tokens and requests (vLLM: vllm:prompt_tokens_total, vllm:generation_tokens_total, vllm:request_success_total)
        self.prompt_tokens = Counter(P + "prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter(P + "generation_tokens", "Tokens generated", registry=r)
        self.requests = Counter(P + "requests", "HTTP requests finished, by endpoint, status code and finish reason",
                                ["endpoint", "status", "finish_reason"], registry=r)
        self.reloads = Counter(P + "draft_reloads", "Draft reload attempts by result", ["result"], registry=r)
        # --- latency (vLLM: vllm:time_to_first_token_seconds, vllm:time_per_output_token_seconds, vllm:e2e_request_latency_seconds)
        self.ttft = Histogram(P + "time_to_first_token_seconds", "Arrival to first token (queue wait included), by "
                              "speculation: enabled or disabled for the request", ["speculation"], buckets=_LATENCY, registry=r)
        self.tpot = Histogram(P + "time_per_output_token_seconds", "Mean time per output token after the first, per request, "
                              "by mode: speculative (it drafted at least once) or plain", ["mode"], buckets=_TPOT, registry=r)
        self.e2e = Histogram(P + "e2e_request_latency_seconds", "Arrival to last byte", ["endpoint"], buckets=_LATENCY, registry=r)
        self.queue_wait = Histogram(P + "request_queue_time_seconds", "Time waiting for a running slot", buckets=_LATENCY, registry=r)
        for speculation, mode in (("enabled", "speculative"), ("disabled", "plain")):
            self.ttft.labels(speculation)
            self.tpot.labels(mode)
        # --- the engine's steps (one per target call, all running requests batched in it)
        self.batch_size = Histogram(P + "engine_batch_size", "Sequences in one target call", buckets=_BATCH, registry=r)
        self.step_tokens = Histogram(P + "engine_step_tokens", "Tokens fed to one target call (prompt chunks, last "
                                     "tokens and drafts of every sequence in it)", buckets=_TOKENS, registry=r)
        self.step_seconds = Histogram(P + "engine_step_seconds", "Time of one batched target call", buckets=_STEP, registry=r)
        self.chosen_k = Histogram(P + "spec_decode_chosen_k", "Draft length chosen for one sequence in one step "
                                  "(0: plain decoding that step)", buckets=_K, registry=r)
        self.call_cost_ratio = Gauge(P + "engine_call_cost_ratio", "What the engine has learnt a target call feeding "
                                     "`tokens` tokens costs against a 1-token call on this machine (what the draft "
                                     "length is chosen against)", ["tokens"], registry=r)
        self.preemptions = Counter(P + "engine_preemptions", "Sequences that gave their KV blocks back to be "
                                   "recomputed later (the pool ran out)", registry=r)
        # read from the engine at scrape time (watch_engine), so they are right between steps too
        self.kv_blocks_used = Gauge(P + "kv_blocks_used", "Target KV blocks held by running sequences", registry=r)
        self.kv_blocks_free = Gauge(P + "kv_blocks_free", "Target KV blocks free or holding a cached prefix no one uses", registry=r)
        self.engine_sequences = Gauge(P + "engine_sequences", "Sequences in the engine (running or waiting for blocks)", registry=r)
        # --- traffic capture (--capture-dir; server/capture.py)
        self.capture_records = Counter(P + "capture_records", "Finished choices written to the traffic capture", registry=r)
        self.capture_tokens = Counter(P + "capture_tokens", "Output tokens written to the traffic capture", registry=r)
        self.capture_dropped = Counter(P + "capture_dropped", "Choices chosen for capture but not written, by reason "
                                       "(queue_full: the writer fell behind; write_error: the disk refused)",
                                       ["reason"], registry=r)
        self.capture_shards_deleted = Counter(P + "capture_shards_deleted", "Oldest capture shards deleted to stay "
                                              "under --capture-max-bytes", registry=r)
        self.capture_bytes = Gauge(P + "capture_bytes", "Bytes of traffic capture on disk", registry=r)
        self.capture_seconds = Counter(P + "capture_seconds", "Time spent on traffic capture, by stage: score (the "
                                       "engine's step, searching the top alternatives only capture asked for), record "
                                       "(the event loop, building a finished choice's record), write (the writer "
                                       "thread, encoding and writing it); its rate is the share of a core capture "
                                       "uses, which bounds what it costs serving", ["stage"], registry=r)
        for reason in ("queue_full", "write_error"):
            self.capture_dropped.labels(reason)
        for stage in CAPTURE_STAGES:
            self.capture_seconds.labels(stage)
        # --- state
        self.running = Gauge(P + "num_requests_running", "Requests generating now", registry=r)
        self.waiting = Gauge(P + "num_requests_waiting", "Requests queued for a running slot", registry=r)
        self.info = Info(P + "model", "Served models: target, draft (or proposer) and their revisions", registry=r)
        self.info.info({"target": "", "target_revision": "", "draft": "", "draft_revision": "", "proposer": "", "ready": "false"})

    # --- recording helpers (called on the event loop; prometheus-client is thread-safe anyway)

    def record_step(self, step: StepStats) -> None:
        kind = "speculative" if step.num_drafted else "plain"
        self.target_calls.labels(kind).inc()
        self.target_verify.labels(kind).observe(step.target_time_s)
        self.current_k.set(step.num_drafted)
        if not step.num_drafted:
            return
        self.drafts.inc()
        self.draft_tokens.inc(step.num_drafted)
        self.accepted_tokens.inc(step.num_accepted)
        self.emitted_tokens.inc(step.num_emitted)
        self.draft_step.observe(step.draft_time_s)
        for position in range(step.num_drafted):
            self.drafted_per_pos.labels(str(position)).inc()
        for position in range(min(step.num_accepted + 1, step.num_drafted)):
            self.reached_per_pos.labels(str(position)).inc()
        for position in range(step.num_accepted):
            self.accepted_per_pos.labels(str(position)).inc()

    def record_engine_step(self, report) -> None:
        """drafting.engine.StepReport of one batched step (called on the engine's thread)."""
        self.batch_size.observe(report.batch_size)
        self.step_tokens.observe(report.tokens)
        self.step_seconds.observe(report.target_seconds)
        for k in report.draft_lengths:
            self.chosen_k.observe(k)
        if report.preempted:
            self.preemptions.inc(report.preempted)
        if report.capture_seconds:
            self.capture_seconds.labels("score").inc(report.capture_seconds)
        for tokens, ratio in report.relative_costs.items():
            if ratio is not None:
                self.call_cost_ratio.labels(str(tokens)).set(ratio)

    def watch_engine(self, engine) -> None:
        """The engine's gauges, read at each scrape."""
        self.kv_blocks_used.set_function(lambda: engine.pool.used)
        self.kv_blocks_free.set_function(lambda: engine.pool.available)
        self.engine_sequences.set_function(lambda: engine.active)

    def set_scheduler(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)

    def set_models(self, target: str, target_revision: str, draft: str, draft_revision: str, proposer: str, ready: bool) -> None:
        self.info.info({"target": target, "target_revision": target_revision or "", "draft": draft or "",
                        "draft_revision": draft_revision or "", "proposer": proposer or "none", "ready": str(ready).lower()})

    def render(self) -> bytes:
        return generate_latest(self.registry)
