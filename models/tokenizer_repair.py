"""Fix the tokenizer files that transformers derives from a GGUF, so transformers, openvino-tokenizers
and openvino-genai all tokenize, stop and chat the way the original model does.

Boundary: rewrites tokenizer.json, tokenizer_config.json, chat_template.jinja, config.json and
generation_config.json inside one Hugging Face folder; knows nothing about GGUF files or IR.

What goes wrong without it:
- SmolLM2: the GGUF tokenizer comes out as a CodeLlamaTokenizer: `<|im_start|>` is both BOS and EOS
  and is prepended to every input; five CodeLlama infill tokens are appended past the model's
  vocabulary (ids 49152..49156); the decoder is a llama chain (ByteFallback, Fuse, Replace, ByteLevel)
  that openvino-tokenizers rejects ("index '2' out of range").
- Qwen2.5: EOS must be `<|im_end|>` (151645) so chat turns stop, and pad `<|endoftext|>` (151643);
  only 3 of the 22 control tokens come out as added tokens, so "<|fim_prefix|>" or "<tool_call>" in
  a prompt would be split into pieces: all 22 are registered again.
The repair makes every such tokenizer a plain byte-level BPE: ByteLevel decoder and post-processor,
no automatic BOS, no byte fallback, no tokens beyond the model's vocabulary, and a ChatML template.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from models.errors import ConversionError

log = logging.getLogger(__name__)

# Used when the GGUF carries no chat template (both catalog families speak ChatML).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
BYTE_LEVEL_POST_PROCESSOR = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}


@dataclass(frozen=True)
class TokenizerRepair:
    eos_token: str  # the token generation stops at (end of a chat turn)
    pad_token: str  # used to pad batches; never generated
    bos_token: str | None = None  # recorded in configs but never added automatically
    unk_token: str | None = None
    # Control tokens the GGUF stores as plain vocabulary entries: registered as added tokens so
    # text containing them maps to one id, as with the original tokenizer. (content, special)
    added_tokens: tuple[tuple[str, bool], ...] = ()
    # More tokens generation stops at (generation_config.json eos_token_id becomes [eos, *these])
    extra_stop_tokens: tuple[str, ...] = ()


REPAIRS: dict[str, TokenizerRepair] = {
    "smollm2": TokenizerRepair(eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>"),
    "qwen2.5": TokenizerRepair(
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_stop_tokens=("<|endoftext|>",),  # as the original generation_config: [151645, 151643]
        # Qwen2.5's 22 added tokens (ids 151643..151664); `special` as in the original tokenizer_config
        added_tokens=tuple((token, True) for token in (
            "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        )) + tuple((token, False) for token in (
            "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
            "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
        )),
    ),
}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _token_id(tokenizer_json: dict, token: str, field: str) -> int:
    vocab = tokenizer_json["model"]["vocab"]
    if token in vocab:
        return vocab[token]
    for added in tokenizer_json.get("added_tokens", []):
        if added["content"] == token:
            return added["id"]
    raise ConversionError(f"tokenizer repair: {field} {token!r} is not in the vocabulary")


def _added_token(token_id: int, content: str, special: bool) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def _register_added_tokens(data: dict, tokens: tuple[tuple[str, bool], ...]) -> None:
    """Make each (content, special) an added token at its vocabulary id (kept sorted by id)."""
    by_content = {t["content"]: t for t in data["added_tokens"]}
    for content, special in tokens:
        token_id = _token_id(data, content, "added token")
        by_content[content] = _added_token(token_id, content, special)
    data["added_tokens"] = sorted(by_content.values(), key=lambda t: t["id"])


def _repair_tokenizer_json(path: Path, vocab_size: int, added_tokens: tuple[tuple[str, bool], ...] = ()) -> dict:
    data = _read_json(path)
    if not data:
        raise ConversionError(f"tokenizer repair: {path} is missing")
    dropped = [t["content"] for t in data.get("added_tokens", []) if t["id"] >= vocab_size]
    if dropped:
        log.info("tokenizer repair: dropping %d token(s) past the model vocabulary (%d): %s", len(dropped), vocab_size, dropped)
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < vocab_size]
    _register_added_tokens(data, added_tokens)
    data["decoder"] = dict(BYTE_LEVEL_DECODER)
    data["post_processor"] = dict(BYTE_LEVEL_POST_PROCESSOR)
    if data.get("normalizer") == {"type": "Sequence", "normalizers": []}:
        data["normalizer"] = None
    model = data["model"]
    if model.get("type") == "BPE":
        model["byte_fallback"] = False  # byte-level BPE covers every byte; there are no <0xNN> tokens
        model["fuse_unk"] = False
    _write_json(path, data)
    return data


def repair_tokenizer(hf_dir: str | Path, preset: str) -> None:
    """Apply the repair `preset` (a key of REPAIRS) to the tokenizer and configs in `hf_dir`, in place."""
    if preset not in REPAIRS:
        raise ConversionError(f"unknown tokenizer repair {preset!r}; known: {', '.join(sorted(REPAIRS))}")
    repair = REPAIRS[preset]
    hf_dir = Path(hf_dir)
    config = _read_json(hf_dir / "config.json")
    vocab_size = int(config.get("vocab_size") or 0) or 1 << 62
    tokenizer_json = _repair_tokenizer_json(hf_dir / "tokenizer.json", vocab_size, repair.added_tokens)

    ids = {
        "eos_token_id": _token_id(tokenizer_json, repair.eos_token, "eos_token"),
        "pad_token_id": _token_id(tokenizer_json, repair.pad_token, "pad_token"),
        "bos_token_id": _token_id(tokenizer_json, repair.bos_token, "bos_token") if repair.bos_token else None,
    }

    old = _read_json(hf_dir / "tokenizer_config.json")
    template_file = hf_dir / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else old.get("chat_template")
    if not template or "<|im_start|>" not in template:
        log.info("tokenizer repair: no ChatML chat template found, writing the default ChatML template")
        template = CHATML_TEMPLATE
    template_file.write_text(template, encoding="utf-8")

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # load tokenizer.json as is, no class-specific rebuild
        "backend": "tokenizers",
        "bos_token": repair.bos_token,
        "eos_token": repair.eos_token,
        "pad_token": repair.pad_token,
        "unk_token": repair.unk_token,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(config.get("max_position_embeddings") or old.get("model_max_length") or 32768),
    }
    _write_json(hf_dir / "tokenizer_config.json", tokenizer_config)
    for name in ("special_tokens_map.json", "added_tokens.json"):  # stale copies would override the config
        (hf_dir / name).unlink(missing_ok=True)

    if config:
        config.update({key: value for key, value in ids.items() if value is not None})
        _write_json(hf_dir / "config.json", config)
    generation = _read_json(hf_dir / "generation_config.json")
    generation.update({key: value for key, value in ids.items() if value is not None})
    if repair.extra_stop_tokens:
        extra = [_token_id(tokenizer_json, token, "extra_stop_tokens") for token in repair.extra_stop_tokens]
        generation["eos_token_id"] = [ids["eos_token_id"], *extra]
    _write_json(hf_dir / "generation_config.json", generation)
    log.info("tokenizer repair %r applied to %s: %s", preset, hf_dir, ids)


def check_tokenizer(hf_dir: str | Path, preset: str | None = None, strict: bool = True) -> None:
    """ConversionError unless the folder's tokenizer round-trips text, adds no BOS, and renders ChatML.

    With strict=False (a GGUF outside the catalog, no repair preset) problems are logged, not raised.
    """
    try:
        _check_tokenizer(Path(hf_dir), preset)
    except ConversionError as error:
        if strict:
            raise
        log.warning("tokenizer check: %s", error)


def _check_tokenizer(hf_dir: Path, preset: str | None) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    sample = "def add(a, b):\n    return a + b  # héllo 世界 <|im_end|>"
    ids = tokenizer(sample, add_special_tokens=True)["input_ids"]
    decoded = tokenizer.decode(ids)
    if decoded != sample:
        raise ConversionError(f"tokenizer in {hf_dir} does not round-trip: {sample!r} -> {ids[:12]}... -> {decoded!r}")
    if tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]:
        raise ConversionError(f"tokenizer in {hf_dir} still prepends BOS {tokenizer.bos_token!r}")
    if preset is not None:
        repair = REPAIRS[preset]
        if tokenizer.eos_token != repair.eos_token or tokenizer.pad_token != repair.pad_token:
            raise ConversionError(
                f"tokenizer in {hf_dir}: eos/pad are {tokenizer.eos_token!r}/{tokenizer.pad_token!r}, "
                f"expected {repair.eos_token!r}/{repair.pad_token!r}"
            )
    if not tokenizer.chat_template:  # a base model: completions only (chat requests are refused by the server)
        raise ConversionError(f"tokenizer in {hf_dir} has no chat template")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    if "<|im_start|>user\nhi<|im_end|>" not in rendered or not rendered.endswith("<|im_start|>assistant\n"):
        raise ConversionError(f"chat template in {hf_dir} does not render ChatML: {rendered!r}")
