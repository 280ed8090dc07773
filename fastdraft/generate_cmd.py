"""`fastdraft generate`: one prompt through the engine, text streamed to stdout, then a stats line.

    fastdraft generate --target smollm2-135m-instruct --prompt-lookup --max-tokens 64 "def fib(n):"
    fastdraft generate --target qwen2.5-coder-1.5b-instruct --draft qwen2.5-coder-0.5b-instruct --json "..."

The model and speculation flags are `fastdraft serve`'s, with its defaults (server/settings.py): with --draft,
the draft plus prompt lookup (--no-draft-with-lookup: the draft alone), k chosen per step (--no-adaptive
--num-draft-tokens K: a fixed k).
"""

from __future__ import annotations

import argparse
import json
import sys

from drafting.request import MAX_DRAFT_TOKENS
from fastdraft.deprecated_flags import add_alias, warn_deprecated
from models.export import WEIGHT_FORMATS
from server.settings import Settings

SERVER = {name: field.default for name, field in Settings.model_fields.items()}  # the defaults to share


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by commands that run the engine on a target and an optional proposer (finish_model_arguments
    completes them once parsed)."""
    parser.add_argument("--target", required=True, help="catalog name, Hugging Face folder, GGUF file or IR folder")
    parser.add_argument("--draft", help="draft model (same forms as --target); omitted: plain decoding")
    parser.add_argument("--prompt-lookup", action="store_true",
                        help="draft with prompt lookup (n-gram match in the context) instead of a draft model")
    # default None, made the server's in finish_model_arguments: an explicit --no- must be told from no flag
    parser.add_argument("--draft-with-lookup", action=argparse.BooleanOptionalAction, default=None,
                        help="with --draft, prompt lookup too: when the context's last 4 tokens occurred before, "
                             "propose what followed them (up to --copy-tokens) without the draft (default: on; "
                             "--no-draft-with-lookup: the draft alone)")
    parser.add_argument("--copy-tokens", type=int, default=SERVER["copy_tokens"],
                        help=f"with --draft-with-lookup: the longest copied proposal (default {SERVER['copy_tokens']})")
    for role in ("target", "draft"):
        default = SERVER[f"{role}_weight_format"]
        parser.add_argument(f"--{role}-weight-format", default=default, choices=WEIGHT_FORMATS,
                            help=f"weight format of the {role} IR when converting a catalog model (default {default})")
    add_alias(parser, "--weight-format", "--target-weight-format and --draft-weight-format", dest="target_weight_format",
              also=("draft_weight_format",), choices=WEIGHT_FORMATS)
    parser.add_argument("--precision", choices=["f32", "bf16", "f16"], default=SERVER["precision"],
                        help="OpenVINO inference precision hint (f32 for bit-exact comparisons; default: the runtime's)")


def finish_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--prompt-lookup with --draft once meant the draft plus lookup: still does, with a warning."""
    if args.prompt_lookup and args.draft:
        if args.draft_with_lookup is False:
            parser.error("--prompt-lookup (prompt lookup instead of a draft model) and --draft exclude each other")
        warn_deprecated(parser.prog, "--prompt-lookup with --draft", "--draft-with-lookup (the default)")
        args.prompt_lookup, args.draft_with_lookup = False, True
    if args.draft_with_lookup is None:
        args.draft_with_lookup = SERVER["draft_with_lookup"]
    if not 1 <= args.copy_tokens <= MAX_DRAFT_TOKENS:
        parser.error(f"--copy-tokens must be between 1 and {MAX_DRAFT_TOKENS}, got {args.copy_tokens}")


def check_draft_length(parser: argparse.ArgumentParser, flag: str, k: int) -> None:
    if not 1 <= k <= MAX_DRAFT_TOKENS:
        parser.error(f"{flag} must be between 1 and {MAX_DRAFT_TOKENS}, got {k}")


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate text for one prompt", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("prompt", help="prompt text")
    # both default None and are completed in finish(): --num-draft-tokens alone once fixed k
    parser.add_argument("--num-draft-tokens", type=int, default=None,
                        help=f"draft length k when it is fixed (--no-adaptive), 1..{MAX_DRAFT_TOKENS} "
                             f"(default {SERVER['num_draft_tokens']})")
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                        help="draft length chosen per step from measured costs and acceptance (default: on); "
                             "--no-adaptive: always --num-draft-tokens")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and stats")
    parser.set_defaults(func=run, finish=lambda args: finish(parser, args))


def finish(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    finish_model_arguments(parser, args)
    if args.adaptive is None:
        args.adaptive = SERVER["adaptive"]
        if args.num_draft_tokens is not None:  # the old meaning of --num-draft-tokens alone: a fixed k
            warn_deprecated(parser.prog, "--num-draft-tokens without --no-adaptive",
                            "--no-adaptive --num-draft-tokens K for a fixed k")
            args.adaptive = False
    if args.num_draft_tokens is None:
        args.num_draft_tokens = SERVER["num_draft_tokens"]
    check_draft_length(parser, "--num-draft-tokens", args.num_draft_tokens)


def load_from_args(args: argparse.Namespace, max_running: int = 8, **engine_options):
    """Resolve the models named on the command line; return (engine, tokenizer, target, draft).

    The proposer is the server's choice from the same flags (server/runtime.py); engine_options go to load_engine."""
    from transformers import AutoTokenizer

    from drafting.loader import load_engine
    from models.resolve import resolve_model

    target = resolve_model(args.target, weight_format=args.target_weight_format)
    draft = resolve_model(args.draft, weight_format=args.draft_weight_format) if args.draft else None
    engine = load_engine(target, draft, prompt_lookup=args.prompt_lookup or (draft is not None and args.draft_with_lookup),
                         precision=args.precision, max_running=max_running, copy_tokens=args.copy_tokens,
                         **engine_options)
    return engine, AutoTokenizer.from_pretrained(target.tokenizer_dir), target, draft


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat:
        return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False))
    return tokenizer.encode(prompt, add_special_tokens=False)


def run(args: argparse.Namespace) -> int:
    from drafting.detokenize import IncrementalDetokenizer
    from drafting.request import GenerationRequest
    from drafting.sampling import SamplingParams

    try:
        sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
        engine, tokenizer, _, _ = load_from_args(args, num_draft_tokens=args.num_draft_tokens, adaptive=args.adaptive)
        prompt_ids = encode_prompt(tokenizer, args.prompt, args.chat)
        request = GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=args.max_tokens, sampling=sampling,
                                    stop_token_ids=engine.eos_token_ids)
        generation = engine.start(request)
    except (ValueError, KeyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = IncrementalDetokenizer(tokenizer, args.stop)
    with generation:
        for group in generation:
            delta = text.push(group.token_ids)
            if not args.json:
                sys.stdout.write(delta)
                sys.stdout.flush()
            if text.stopped:
                generation.finish_reason = "stop"
                break
    tail = text.flush()
    stats = generation.stats
    if args.json:
        print(json.dumps({"text": text.text, "tokens": generation.token_ids, "finish_reason": generation.finish_reason,
                          "stats": stats.to_dict()}))
        return 0
    sys.stdout.write(tail + "\n")
    print(f"[{stats.generated_tokens} tokens in {stats.total_time_s:.2f}s, {stats.tokens_per_second:.1f} tok/s; "
          f"finish {generation.finish_reason}; proposer {engine.proposer_name or 'none'}; "
          f"mean accepted length {stats.mean_accepted_length:.2f}; alpha {stats.alpha:.2f}; "
          f"acceptance per position {[round(x, 2) for x in stats.acceptance_per_position]}]", file=sys.stderr)
    return 0
