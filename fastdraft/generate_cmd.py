"""`fastdraft generate`: one prompt through the engine, text streamed to stdout, then a stats line.

    fastdraft generate --target smollm2-135m-instruct --prompt-lookup --max-tokens 64 "def fib(n):"
    fastdraft generate --target qwen2.5-coder-1.5b-instruct --draft qwen2.5-coder-0.5b-instruct --json "..."
"""

from __future__ import annotations

import argparse
import json
import sys

from drafting.draft_with_lookup import COPY_TOKENS
from drafting.request import MAX_DRAFT_TOKENS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by commands that run the engine on a target and an optional proposer."""
    parser.add_argument("--target", required=True, help="catalog name, Hugging Face folder, GGUF file or IR folder")
    parser.add_argument("--draft", help="draft model (same forms as --target); omitted: plain decoding")
    parser.add_argument("--prompt-lookup", action="store_true",
                        help="propose by n-gram lookup in the context; with --draft, both: when the context's last "
                             "4 tokens occurred before, copy what followed (up to --copy-tokens) instead of drafting")
    parser.add_argument("--copy-tokens", type=int, default=COPY_TOKENS,
                        help=f"with --draft and --prompt-lookup: the longest copied proposal (default {COPY_TOKENS})")
    parser.add_argument("--weight-format", default="int8", choices=["int8", "int4", "fp16", "fp32"],
                        help="IR weight format for catalog models (default int8)")
    parser.add_argument("--precision", choices=["f32", "bf16", "f16"], default=None,
                        help="OpenVINO inference precision hint (f32 for bit-exact comparisons)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate text for one prompt", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("prompt", help="prompt text")
    parser.add_argument("--num-draft-tokens", type=int, default=None,
                        help=f"a fixed draft length k (1..{MAX_DRAFT_TOKENS}); default: chosen per step from measured "
                             "costs and acceptance (the server's default)")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and stats")
    parser.set_defaults(func=run)


def load_from_args(args: argparse.Namespace, max_running: int = 8):
    """Resolve the models named on the command line; return (engine, tokenizer, target, draft)."""
    from transformers import AutoTokenizer

    from drafting.loader import load_engine
    from models.resolve import resolve_model

    target = resolve_model(args.target, weight_format=args.weight_format)
    draft = resolve_model(args.draft, weight_format=args.weight_format) if args.draft else None
    engine = load_engine(target, draft, prompt_lookup=args.prompt_lookup,
                         precision=args.precision, max_running=max_running, copy_tokens=args.copy_tokens)
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
        engine, tokenizer, _, _ = load_from_args(args)
        prompt_ids = encode_prompt(tokenizer, args.prompt, args.chat)
        request = GenerationRequest(prompt_ids=prompt_ids, max_new_tokens=args.max_tokens, sampling=sampling,
                                    stop_token_ids=engine.eos_token_ids, num_draft_tokens=args.num_draft_tokens)
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
