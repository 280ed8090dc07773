"""`fastdraft serve` and `python -m server`: the flags are generated from server/settings.py, one per field
(--num-draft-tokens <-> FASTDRAFT_NUM_DRAFT_TOKENS <-> Settings.num_draft_tokens), so names cannot drift.
A flag given on the command line wins over the environment variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing

from server.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="OpenAI-compatible speculative-decoding server",
                                   description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(func=serve)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"FASTDRAFT_{name.upper()}"
        default = "none" if field.default is None else field.default
        # argparse %-formats help strings: a literal "%" in a description ("+1% code") must be doubled
        help_text = f"{field.description} [env {env}; default {default}]".replace("%", "%%")
        kind = _base_type(field.annotation)
        if kind is bool and name.startswith("no_"):
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=argparse.SUPPRESS, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            # SUPPRESS: an absent flag sets nothing, so the env var applies (and the dispatcher's --log-level survives)
            parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, help=help_text,
                                metavar=name.split("_")[-1].upper())


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from server.app import create_app

    try:
        settings = settings_from_args(args)
    except ValidationError as error:
        print(f"fastdraft serve: invalid settings:\n{error}", file=sys.stderr)
        return 2
    level = settings.log_level.upper()
    logging.getLogger().setLevel(level)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("settings: %s", settings.model_dump(exclude={"api_key"}) | {"api_key": "***" if settings.api_key else None})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                           log_level=settings.log_level.lower(), timeout_graceful_shutdown=10))
    app.state.request_shutdown = lambda: setattr(server, "should_exit", True)
    server.run()
    if app.state.runtime.state == "failed":
        log.error("exiting: %s", app.state.runtime.error)
        return 1
    return 0


def _base_type(annotation: typing.Any) -> type:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args)
