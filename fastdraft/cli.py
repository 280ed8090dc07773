"""The `fastdraft` command: one dispatcher, each subcommand registered by the package that owns it.

Subcommand modules are imported lazily so `fastdraft --help` stays fast; each module exposes
`register(subparsers)` and sets `func` on its parser, and `finish` where a check or a deprecated spelling spans
several flags (argparse sees one flag at a time). Flags are named and defaulted as `fastdraft serve`'s.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand -> module that registers it
SUBCOMMANDS = {
    "models": "models.cli",
    "generate": "fastdraft.generate_cmd",
    "bench": "fastdraft.bench",
    "serve": "server.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdraft", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=None,
                        help="logging level (DEBUG, INFO, WARNING); default $FASTDRAFT_LOG_LEVEL or INFO")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a subcommand whose package is not built yet
        module.register(subparsers)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the subcommand reads it: parsed, then its `finish` applied (if it sets one)."""
    args = build_parser().parse_args(argv)
    finish = getattr(args, "finish", None)
    if finish is not None:
        finish(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = (args.log_level or os.environ.get("FASTDRAFT_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
