"""Tiny stand-ins for the pipeline's inputs: a byte-level BPE tokenizer, a random target, a source folder.

Used by tests/test_training_*.py and for smoke-running the stages without a real model:

    python -m training.fixtures --out /tmp/fd-fixtures   # writes tokenizer/, target-hf/, sources/, sources.json
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PROSE = [
    "The committee met on Tuesday to review the budget for the coming year. Members agreed that the school "
    "needed new books, a repaired roof and better heating before the winter.",
    "Fellow citizens, the state of the union is strong. Our farms are productive, our factories are busy, "
    "and our people are at work in every town and city of the nation.",
    "She walked along the river in the early morning, listening to the birds and watching the light "
    "change on the water as the sun rose over the hills.",
    "To be, or not to be, that is the question: whether it is nobler in the mind to suffer the slings and "
    "arrows of outrageous fortune, or to take arms against a sea of troubles.",
]
STDLIB_FILES = ["textwrap.py", "shlex.py", "colorsys.py", "bisect.py"]


def source_texts() -> dict[str, str]:
    """Relative path -> text of the fixture sources (prose variations and a few stdlib modules)."""
    files = {}
    for i in range(12):
        paragraphs = [PROSE[(i + j) % len(PROSE)] for j in range(3)]
        files[f"prose/doc{i:02d}.txt"] = f"Document {i}.\n\n" + "\n\n".join(paragraphs) + "\n"
    files["prose/duplicate.txt"] = files["prose/doc00.txt"]  # dropped by the file-level dedupe
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_FILES:
        files[f"code/{name}"] = (stdlib / name).read_text()
    return files


def write_sources(folder: str | Path) -> Path:
    """Write the fixture folder and a sources.json (two `dir` sources: nl and code) next to it."""
    folder = Path(folder)
    for rel, text in source_texts().items():
        (folder / "sources" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "sources" / rel).write_text(text)
    spec = {"sources": [
        {"name": "fixture-prose", "kind": "dir", "path": str(folder / "sources"), "version": "1",
         "include": ["prose/*.txt"], "domain": "nl", "cleaner": "text"},
        {"name": "fixture-code", "kind": "dir", "path": str(folder / "sources"), "version": "1",
         "include": ["code/*.py"], "domain": "code", "cleaner": "code"},
    ], "stages": {"nl": {"nl": 1.0}, "code-nl": {"code": 0.7, "nl": 0.3}}}
    path = folder / "sources.json"
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def make_tokenizer(folder: str | Path, vocab_size: int = 400) -> Path:
    """A byte-level BPE tokenizer trained on the fixture texts, saved as an HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(sorted(source_texts().values()), trainer=trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "unk_token": None, "model_max_length": 2048, "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }, indent=1) + "\n")
    return folder


def make_target(folder: str | Path, tokenizer_dir: str | Path, seed: int = 1, layers: int = 2, hidden: int = 64):
    """A random tiny Qwen2 'target' over the fixture tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    from training.draft_folder import copy_tokenizer

    folder = Path(folder)
    vocab = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())
    vocab_size = len(vocab["model"]["vocab"]) + len([t for t in vocab["added_tokens"] if t["content"] not in vocab["model"]["vocab"]])
    eos = next(t["id"] for t in vocab["added_tokens"] if t["content"] == "<|endoftext|>")
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=eos, bos_token_id=None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # sharpen the random model so greedy outputs are not all ties (larger logits)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)
    model.save_pretrained(folder)
    GenerationConfig(eos_token_id=eos, do_sample=False).save_pretrained(folder)
    copy_tokenizer(tokenizer_dir, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fixtures", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for tokenizer/, target-hf/, sources/")
    args = parser.parse_args(argv)
    write_sources(args.out)
    make_tokenizer(args.out / "tokenizer")
    make_target(args.out / "target-hf", args.out / "tokenizer")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
