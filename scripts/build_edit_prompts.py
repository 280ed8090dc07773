"""Build code-edit chat prompts (the output mostly copies the input) from the corpus's pinned Python sources.

    python scripts/build_edit_prompts.py --count 24 --out prompts/edit-python.jsonl

The workload where prompt lookup pays: the answer repeats the prompt's code with small changes. Each prompt
asks the target to add type hints to one whole function (10-35 lines, at most 1,200 characters, ASCII) and
to reply with the complete function. Functions come from the code sources of training/corpus_sources.json
(fetched into the corpus cache by `python -m training.corpus`), ordered by a hash of their id, so the file
is deterministic.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.corpus import DEFAULT_CACHE, DEFAULT_SOURCES, iter_source_files  # noqa: E402

INSTRUCTION = ("Add type hints to every parameter and to the return value of this Python function, changing "
               "nothing else. Reply with the complete function in one ```python code block and no explanation.")
MIN_LINES, MAX_LINES, MAX_CHARS = 10, 35, 1200


def whole_functions(source: str, path: str, text: str):
    """Yield (id, function source) for each usable top-level function of one file."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    lines = text.splitlines(keepends=True)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.returns is not None:
            continue
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        body = "".join(lines[start - 1:node.end_lineno])
        if not MIN_LINES <= node.end_lineno - start + 1 <= MAX_LINES or len(body) > MAX_CHARS or not body.isascii():
            continue
        yield f"{source}/{path}:{node.name}", body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    specs = [s for s in json.loads(args.sources.read_text())["sources"] if s["domain"] == "code"]
    found: dict[str, str] = {}
    for spec in specs:
        for path, data in iter_source_files(spec, args.cache_dir):
            for function_id, body in whole_functions(spec["name"], path, data.decode("utf-8", "replace")):
                found.setdefault(function_id, body)
    order = sorted(found, key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:args.count]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for function_id in order:
            content = f"{INSTRUCTION}\n\n```python\n{found[function_id]}```"
            f.write(json.dumps({"id": function_id, "task": "edit", "messages": [{"role": "user", "content": content}]}) + "\n")
    print(f"{len(order)} of {len(found)} usable functions -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
