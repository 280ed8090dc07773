"""Deprecated spellings of command-line flags: still accepted, each use warned on stderr with the flag that
replaces it, the value stored where that flag stores it (so a command reads one name, whatever was typed).

Boundary: argparse only. Each command declares its old spellings next to the flags that replace them; the
names and defaults to converge on are `fastdraft serve`'s (server/settings.py).
"""

from __future__ import annotations

import argparse
import sys


def warn_deprecated(prog: str, old: str, new: str) -> None:
    """One line on stderr, as Python 3.13's argparse words a deprecated option."""
    print(f"{prog}: warning: {old} is deprecated, use {new}", file=sys.stderr)


class DeprecatedAlias(argparse.Action):
    """An old option string: warns, then stores its value (or `const`, with nargs=0) into `dest` and every
    destination in `also`, the destinations of the flags that replace it."""

    def __init__(self, option_strings, dest, replacement: str, also: tuple[str, ...] = (), **kwargs) -> None:
        kwargs.setdefault("help", f"deprecated: use {replacement}")
        # SUPPRESS: the new flag owns the default of the shared destination
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement
        self.also = tuple(also)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(parser.prog, option_string, self.replacement)
        value = self.const if self.nargs == 0 else values
        for dest in (self.dest, *self.also):
            setattr(namespace, dest, value)


def add_alias(parser: argparse.ArgumentParser, old: str, replacement: str, dest: str, **kwargs) -> None:
    """Accept `old` as a deprecated spelling of `replacement`, a flag of this parser storing into `dest`.

    kwargs as for add_argument (type, choices, also=(more destinations,)); a switch takes nargs=0, const=True."""
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, replacement=replacement, **kwargs)
