"""Draft architecture presets: a dataclass, a table of named presets, `from_name()`, and `build_model()`.

A draft is a standard transformers causal LM (Qwen2 or Llama config), so optimum-intel exports it and
openvino-genai loads it like any other model. The only hard constraint is the vocabulary: the draft
reads target ids (config.vocab_size = the target's) and either scores the full vocabulary or only the N
most frequent target tokens: a reduced output layer (lm_head [N, h], untied) described by a
`draft_vocab_map` next to the weights (file format and layout: training/vocab_map.py).

Boundary: builds torch modules from configs; reads no data and knows nothing about training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

ARCHITECTURES = ("qwen2", "llama")


@dataclass(frozen=True)
class DraftConfig:
    name: str
    arch: str = "qwen2"  # qwen2 (biases on q/k/v, like the Qwen targets) or llama (no biases)
    num_layers: int = 4  # depth costs latency per drafted token; FastDraft's Phi-3 draft is shallow
    hidden_size: int = 256  # width; the draft's per-step bytes should stay ~1/10-1/20 of the target's
    num_heads: int = 4  # head_dim = hidden_size / num_heads; 64 keeps the OpenVINO SDPA kernels happy
    num_kv_heads: int = 2  # GQA shrinks the KV cache the draft re-reads every step
    intermediate_size: int = 1024  # MLP width, 4x hidden by default
    max_position: int = 32768  # same context as the targets, so the draft never runs out of positions
    rope_theta: float = 1_000_000.0  # Qwen2.5's base; long contexts need a large base
    tie_embeddings: bool = True  # with a big vocabulary the embedding is most of the params: share it
    draft_vocab_size: int | None = None  # None: the target's full vocabulary; N: the N most frequent target tokens

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, DraftConfig] = {
    # test fixture: trains in milliseconds, exports in seconds
    "tiny": DraftConfig("tiny", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128,
                        max_position=2048),
    # the 45-minute CPU probe of issue 4: ~11.5M params with a 32k output layer
    "draft-12m": DraftConfig("draft-12m", num_layers=4, hidden_size=256, num_heads=4, num_kv_heads=2,
                             intermediate_size=1024, draft_vocab_size=32768),
    # FastDraft's Phi-3-mini draft size class (~50M params with the full 151k vocabulary tied)
    "draft-50m": DraftConfig("draft-50m", num_layers=4, hidden_size=512, num_heads=8, num_kv_heads=2,
                             intermediate_size=1536),
    # FastDraft's Llama-3.1-8B draft size class (~150M params)
    "draft-150m": DraftConfig("draft-150m", num_layers=8, hidden_size=768, num_heads=12, num_kv_heads=4,
                              intermediate_size=2304),
}


def from_name(name: str, **overrides) -> DraftConfig:
    """A preset by name, with field overrides (e.g. draft_vocab_size=32768)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    overrides = {key: value for key, value in overrides.items() if value is not None}
    return replace(PRESETS[name], **overrides)


def hf_config(cfg: DraftConfig, vocab_size: int, bos_token_id: int | None = None, eos_token_id=None):
    """The transformers config for `cfg`; `vocab_size` is the draft's (N when reduced, else the target's)."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, initializer_range=0.02,
    )
    if cfg.arch == "qwen2":
        return Qwen2Config(**common)
    return LlamaConfig(**common)


def build_model(cfg: DraftConfig, vocab_size: int, seed: int = 0, bos_token_id: int | None = None, eos_token_id=None):
    """A randomly initialized causal LM (fp32) for `cfg` over a `vocab_size`-token target, seeded.

    With cfg.draft_vocab_size = N the output layer is cut to N rows (see reduce_output_layer).
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    if cfg.draft_vocab_size:
        cfg = replace(cfg, tie_embeddings=False)
    config = hf_config(cfg, vocab_size, bos_token_id, eos_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if cfg.draft_vocab_size:
        reduce_output_layer(model, cfg.draft_vocab_size)
    return model


def reduce_output_layer(model, rows: int, keep_ids=None) -> None:
    """Replace lm_head by an [rows, h] layer (untied); `keep_ids` copies those rows of the old head."""
    import torch

    old = model.get_output_embeddings()
    new = torch.nn.Linear(old.in_features, rows, bias=False, dtype=old.weight.dtype)
    with torch.no_grad():
        if keep_ids is not None:
            new.weight.copy_(old.weight[torch.as_tensor(keep_ids, dtype=torch.long)])
        else:
            new.weight.normal_(0.0, model.config.initializer_range)
    model.config.tie_word_embeddings = False
    if hasattr(model, "_tied_weights_keys"):
        model._tied_weights_keys = None
    model.lm_head = new
    model.config.draft_vocab_size = rows


def reduce_tied_vocabulary(model, keep_ids) -> None:
    """Cut the vocabulary to `keep_ids` + one "unknown" row, tied input/output (vocab_map input "draft").

    Row i is the old row of target id keep_ids[i]; the unknown row (last) is the mean of the rows dropped,
    the expected embedding of "some rare token". The result is a plain causal LM with vocab_size N + 1.
    """
    import torch

    old = model.get_input_embeddings().weight.detach()
    keep = torch.as_tensor(keep_ids, dtype=torch.long)
    dropped = torch.ones(old.shape[0], dtype=torch.bool)
    dropped[keep] = False
    rows = torch.cat([old[keep], old[dropped].mean(0, keepdim=True) if dropped.any() else old.mean(0, keepdim=True)])
    embedding = torch.nn.Embedding(rows.shape[0], rows.shape[1], dtype=old.dtype)
    with torch.no_grad():
        embedding.weight.copy_(rows)
    model.set_input_embeddings(embedding)
    head = torch.nn.Linear(rows.shape[1], rows.shape[0], bias=False, dtype=old.dtype)
    head.weight = embedding.weight
    model.lm_head = head
    config = model.config
    config.vocab_size = rows.shape[0]
    config.tie_word_embeddings = True
    if hasattr(config, "get_text_config"):
        config.get_text_config().tie_word_embeddings = True
    # special ids name target tokens; the draft's config must not point past its own rows
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(config, name, None) is not None:
            setattr(config, name, None)


def count_params(model, exclude_input_embedding: bool = False) -> int:
    params = {id(p): p for p in model.parameters()}
    if exclude_input_embedding and not model.config.tie_word_embeddings:
        params.pop(id(model.get_input_embeddings().weight), None)
    return sum(p.numel() for p in params.values())
