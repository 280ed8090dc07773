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
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.build_code_prompts import add_arguments, collect, definition_start, parse_source  # noqa: E402

INSTRUCTION = ("Add type hints to every parameter and to the return value of this Python function, changing "
               "nothing else. Reply with the complete function in one ```python code block and no explanation.")
MIN_LINES, MAX_LINES, MAX_CHARS = 10, 35, 1200


def whole_functions(source: str, path: str, text: str):
    """Yield (id, function source) for each usable top-level function of one file."""
    parsed = parse_source(text)
    if parsed is None:
        return
    tree, lines = parsed
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.returns is not None:
            continue
        start = definition_start(node)
        body = "".join(lines[start - 1:node.end_lineno])
        if not MIN_LINES <= node.end_lineno - start + 1 <= MAX_LINES or len(body) > MAX_CHARS or not body.isascii():
            continue
        yield f"{source}/{path}:{node.name}", body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, count=24)
    args = parser.parse_args()
    with args.out.open("w") as f:
        for function_id, body in collect(whole_functions, args):
            content = f"{INSTRUCTION}\n\n```python\n{body}```"
            f.write(json.dumps({"id": function_id, "task": "edit", "messages": [{"role": "user", "content": content}]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
