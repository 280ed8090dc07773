"""Server settings: one pydantic-settings model; every field is also an env var FASTDRAFT_<NAME> and a CLI flag
--<name-with-dashes> (server/cli.py derives the flags from these fields, so the three names never drift).

Precedence: CLI flag > environment variable > default.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"
# The best draft we ship for the default target: our own (committed in models/drafts/, nothing to pull),
# measured faster than the 0.5B sibling side by side (models/drafts/fastdraft-qwen2.5-coder-1.5b/README.md).
DEFAULT_DRAFT = "fastdraft-qwen2.5-coder-1.5b"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASTDRAFT_", extra="ignore")

    # --- models
    target: str = Field(DEFAULT_TARGET, description="target model: catalog name, HF folder, GGUF file or OpenVINO IR folder")
    draft: str = Field(DEFAULT_DRAFT, description="draft model (same forms as --target); reloaded from here by POST /admin/reload and SIGHUP")
    prompt_lookup: bool = Field(False, description="draft with prompt lookup (n-gram match in the context) instead of a draft model")
    no_draft: bool = Field(False, description="no proposer: plain decoding only")
    draft_with_lookup: bool = Field(
        True, description="with a draft model, prompt lookup too: when the context's last 4 tokens occurred before, "
                          "propose what followed them (up to --copy-tokens) without the draft; measured with the "
                          "shipped draft: +1% code, +6% summarization, +7% chat, 1.6x on code edits "
                          "(--no-draft-with-lookup: the draft alone)")
    copy_tokens: int = Field(8, ge=1, le=16, description="with --draft-with-lookup: the longest copied proposal")
    target_weight_format: str = Field("int8", description="weight format of the target IR when converting from a catalog name (int8, int4, fp16, fp32)")
    draft_weight_format: str = Field("int8", description="weight format of the draft IR when converting from a catalog name")
    precision: str | None = Field(None, description="OpenVINO inference precision hint (e.g. f32); default: the runtime's")
    pull: bool = Field(True, description="pull and convert catalog models on first start (false: fail if not prepared)")
    served_model_name: str | None = Field(None, description="model id clients send and /v1/models lists; default: the target's name")

    # --- speculation
    num_draft_tokens: int = Field(3, ge=1, le=16, description="draft length k when it is fixed (--no-adaptive, or a request's "
                                                             "speculative.num_draft_tokens); 3 is the shipped draft's best fixed k")
    adaptive: bool = Field(True, description="draft length chosen per step from measured costs and acceptance (k = 0 "
                                             "included: plain decoding where drafting does not pay); --no-adaptive: "
                                             "always --num-draft-tokens (requests may override with speculative.adaptive)")
    spec_max_running: int | None = Field(
        None, ge=0,
        description="draft only while at most this many requests are generating (0: never draft; default: the "
                    "cost-driven draft length decides at every load)")
    prefix_caching: bool = Field(True, description="a prompt that starts like an earlier one takes its KV blocks "
                                                  "instead of recomputing them; --no-prefix-caching: every request "
                                                  "pays its whole prefill (benchmarks against servers without it)")
    kv_cache_gb: float | None = Field(None, gt=0, description="memory for the target's KV blocks (the draft gets as many "
                                                             "blocks); default: a tenth of RAM, at most 2 GiB")

    # --- traffic capture (server/capture.py; what is stored: fastdraft/traffic.py)
    capture_dir: str | None = Field(None, description="append every finished choice's token ids and the target's top "
                                                       "log-probabilities here, for python -m training.align "
                                                       "--from-traffic (default: off; no text is stored)")
    capture_sample: float = Field(1.0, ge=0.0, le=1.0, description="fraction of choices captured")
    capture_max_bytes: int = Field(1 << 30, ge=1 << 20, description="disk the capture may use; the oldest shards "
                                                                    "are deleted first")
    capture_top_logprobs: int = Field(8, ge=1, le=20, description="the target's most likely alternatives stored per "
                                                                  "output token")

    # --- HTTP
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind")
    api_key: str | None = Field(None, description="if set, /v1/* and /admin/* need 'Authorization: Bearer <key>'")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (413 above)")
    log_level: str = Field("info", description="log level of the server and uvicorn")

    # --- load
    max_running: int = Field(8, ge=1, le=64, description="requests generating at once: the engine's batch limit (all "
                                                        "running requests share one target call per step)")
    max_waiting: int = Field(32, ge=0, description="requests queued (FIFO) behind the running ones; 429 when full")
    max_tokens_limit: int = Field(4096, ge=1, description="largest max_tokens / max_completion_tokens a request may ask for")
    default_completion_tokens: int = Field(16, ge=1, description="max_tokens of /v1/completions when the request sets none (OpenAI's default)")

    @model_validator(mode="after")
    def _one_proposer(self) -> "Settings":
        if self.prompt_lookup and self.no_draft:
            raise ValueError("--prompt-lookup and --no-draft exclude each other")
        return self

    @property
    def proposer_mode(self) -> str:
        """'draft' (a draft model), 'prompt-lookup' or 'none'."""
        if self.no_draft:
            return "none"
        return "prompt-lookup" if self.prompt_lookup else "draft"
