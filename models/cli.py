"""`fastdraft models ...`: list the catalog and the drafts built here, pull (fetch + convert + export) a model.

Boundary: argparse and printing only; all work is done by `resolve` and `catalog`.
"""

from __future__ import annotations

import argparse
import time

from models.catalog import CATALOG, local_drafts
from models.export import WEIGHT_FORMATS
from models.home import models_home
from models.resolve import hf_dir_for, ir_dir_for, is_ir_dir, resolve_model


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list and pull models (catalog, cache under $FASTDRAFT_HOME)")
    actions = parser.add_subparsers(dest="models_command", required=True)

    list_parser = actions.add_parser("list", help="catalog names, drafts built here, and which weight formats are prepared")
    list_parser.set_defaults(func=cmd_list)

    pull = actions.add_parser("pull", help="fetch, convert and export a model (a catalog name, HF folder or .gguf)")
    pull.add_argument("name", help="catalog name (see `fastdraft models list`), Hugging Face folder or .gguf file")
    pull.add_argument("--weight-format", default="int8", choices=WEIGHT_FORMATS, help="IR weight format (default int8)")
    pull.set_defaults(func=cmd_pull)


def _status(name: str) -> str:
    prepared = [fmt for fmt in WEIGHT_FORMATS if is_ir_dir(ir_dir_for(name, fmt))]
    parts = [f"ir: {','.join(prepared)}" if prepared else "ir: -"]
    if (hf_dir_for(name) / "config.json").is_file():
        parts.append("hf")
    return " ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    print(f"models home: {models_home()}")
    drafts = local_drafts()
    width = max(len(name) for name in [*CATALOG, *drafts])
    for name, entry in sorted(CATALOG.items()):
        status = "shipped" if entry.kind == "local_ir" else _status(name)
        print(f"{name:<{width}}  {status:<24}  {entry.description}")
    for name, entry in drafts.items():
        print(f"{name:<{width}}  {'draft, built here':<24}  {entry.description} ({entry.local_ir_dir})")
    others = sorted(p.name for p in models_home().glob("*") if p.is_dir() and p.name not in CATALOG) if models_home().is_dir() else []
    for name in others:
        print(f"{name:<{width}}  {_status(name):<24}  (prepared from a local folder or GGUF)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    start = time.monotonic()
    resolved = resolve_model(args.name, weight_format=args.weight_format, pull=True)
    print(f"{resolved.name} {resolved.weight_format} revision {resolved.revision}: {resolved.ir_dir} "
          f"({time.monotonic() - start:.0f} s)")
    return 0
