"""Build HumanEval-style code-completion prompts from the corpus's pinned Python sources, for KD data.

    python scripts/build_code_prompts.py --count 1000 --out runs/code-functions.jsonl

HumanEval has 164 problems, 20% of them held out: too few target generations to align a draft on code.
This script makes more prompts of the same shape from the code sources of training/corpus_sources.json
(the Python 3.11 standard library, numpy, requests; fetched into the corpus cache): the module's import
lines, then a public function's signature and docstring; the target writes the body. The draft was
pretrained on these files, but KD teaches it the TARGET's continuation, which is what acceptance needs.
HumanEval itself is never used here, so the held-out evaluation prompts stay unseen.

Selection is deterministic: functions (and methods, under their class line) with a docstring of 40-800
characters, at least two statements after it and a prompt of at most 1,500 characters, ordered by a hash
of their id ("<source>/<path>:<qualified name>").
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

MAX_IMPORT_LINES = 12
MAX_PROMPT_CHARS = 1500


def parse_source(text: str) -> tuple[ast.Module, list[str]] | None:
    """The file's syntax tree and its lines (line endings kept), or None when it does not parse."""
    try:
        return ast.parse(text), text.splitlines(keepends=True)
    except (SyntaxError, ValueError):
        return None


def definition_start(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """First line of a function definition, its decorators included."""
    return min([d.lineno for d in node.decorator_list] + [node.lineno])


def import_header(tree: ast.Module, lines: list[str]) -> str:
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))][:MAX_IMPORT_LINES]
    return "".join("".join(lines[node.lineno - 1:node.end_lineno]) for node in imports)


def function_prompts(source: str, path: str, text: str):
    """Yield (id, prompt) for each usable function of one file."""
    parsed = parse_source(text)
    if parsed is None:
        return
    tree, lines = parsed
    header = import_header(tree, lines)
    scopes = [(node, None) for node in tree.body]
    scopes += [(child, node) for node in tree.body if isinstance(node, ast.ClassDef) for child in node.body]
    for node, cls in scopes:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        docstring = ast.get_docstring(node, clean=False)
        if docstring is None or not 40 <= len(docstring) <= 800 or len(node.body) < 3:
            continue
        start = definition_start(node)
        signature_and_docstring = "".join(lines[start - 1:node.body[0].end_lineno])
        class_line = f"class {cls.name}:\n" if cls is not None else ""
        prompt = (header + "\n\n" if header else "") + class_line + signature_and_docstring
        if len(prompt) > MAX_PROMPT_CHARS or not prompt.isascii():
            continue
        name = f"{cls.name}.{node.name}" if cls is not None else node.name
        yield f"{source}/{path}:{name}", prompt


def add_arguments(parser: argparse.ArgumentParser, count: int) -> None:
    parser.add_argument("--count", type=int, default=count)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)


def collect(extract, args: argparse.Namespace) -> list[tuple[str, str]]:
    """(id, text) pairs that `extract(source name, path, file text)` yields from the code sources, the first
    --count of them in the order of a hash of their ids (deterministic); reports how many were usable."""
    specs = [s for s in json.loads(args.sources.read_text())["sources"] if s["domain"] == "code"]
    found: dict[str, str] = {}
    for spec in specs:
        for path, data in iter_source_files(spec, args.cache_dir):
            for item_id, text in extract(spec["name"], path, data.decode("utf-8", "replace")):
                found.setdefault(item_id, text)
    order = sorted(found, key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:args.count]
    print(f"{len(order)} of {len(found)} usable functions -> {args.out}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return [(item_id, found[item_id]) for item_id in order]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, count=1000)
    args = parser.parse_args()
    with args.out.open("w") as f:
        for prompt_id, prompt in collect(function_prompts, args):
            f.write(json.dumps({"id": prompt_id, "task": "code", "prompt": prompt}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
