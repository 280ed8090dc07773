"""IncrementalDetokenizer on the real smollm2 and qwen2.5-coder tokenizers: the streamed deltas join to the full
decode (code, emoji, CJK, leading spaces, special tokens, random ids in random groups), stop strings cut exactly
where the full text has them, and the work per push stays flat in the output length; the same for the logprob
aligner built on it."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from drafting.detokenize import IncrementalDetokenizer

QWEN_NAMES = ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct")  # one tokenizer, two folders

TEXTS = {
    "code": "def fibonacci(n):\n    \"\"\"Return the n-th number.\"\"\"\n    if n < 2:\n        return n\n"
            "    return fibonacci(n - 1) + fibonacci(n - 2)\n\n\nprint({k: v for k, v in zip('ab', [1, 2])})\n",
    "emoji": "Done ✅ — shipped 🚀🚀, waving 👋🏽, family 👨‍👩‍👧 and flags 🇫🇷🇯🇵!",
    "cjk": "你好，世界！这是一个测试。日本語のテキストも、한국어도 섞어서。",
    "leading spaces": "   three spaces first\n\t\ttabs,  double  spaces and a trailing space ",
    "special tokens": "<|im_start|>user\nSay hi 👋<|im_end|>\n<|im_start|>assistant\nHi! 你好<|im_end|>",
    "accents": "Les élèves français écrivent « naïveté » — Ünïcödé façade, señor.",
}


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "qwen2.5-coder"])
def tokenizer(request):
    from models.resolve import hf_dir_for

    if request.param == "smollm2-135m-instruct":
        folder = request.getfixturevalue("smollm2_fp32").tokenizer_dir
    else:
        folders = [hf_dir_for(name) for name in QWEN_NAMES if (hf_dir_for(name) / "tokenizer.json").is_file()]
        if not folders:
            pytest.skip(f"no qwen2.5-coder tokenizer.json under {hf_dir_for(QWEN_NAMES[0]).parent.parent}")
        folder = folders[0]
    return AutoTokenizer.from_pretrained(folder)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def groups_of(ids: list[int], rng: random.Random | None) -> list[list[int]]:
    """`ids` cut into groups of 1..5 (random sizes) or, without an rng, of one token each."""
    groups, start = [], 0
    while start < len(ids):
        size = rng.randint(1, 5) if rng else 1
        groups.append(ids[start:start + size])
        start += size
    return groups


def stream(tokenizer, groups: list[list[int]], stop=None) -> IncrementalDetokenizer:
    """Push the groups (until a stop string matches), then flush; check that the deltas build `text`."""
    detokenizer = IncrementalDetokenizer(tokenizer, stop)
    streamed = ""
    for group in groups:
        streamed += detokenizer.push(group)
        assert streamed == detokenizer.text
        if detokenizer.stopped:
            break
    streamed += detokenizer.flush()
    assert streamed == detokenizer.text
    return detokenizer


def stream_checking_each_push(tokenizer, ids, rng, skip_special_tokens, byte_level=True) -> str:
    """Push `ids` in groups, then flush; after each push the released text is a prefix of the full decode and, for
    a byte-level tokenizer, the full decode so far up to an incomplete character at its end (nothing held longer
    than that). Not for byte fallback: there an incomplete character turns the whole run of byte tokens before
    it into replacement characters until it completes."""
    full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
    streamed, pushed = "", 0
    for group in groups_of(ids, rng):
        streamed += detokenizer.push(group)
        pushed += len(group)
        assert full.startswith(streamed), f"after {pushed} tokens"
        if byte_level:
            so_far = tokenizer.decode(ids[:pushed], skip_special_tokens=skip_special_tokens)
            assert streamed == so_far.rstrip("\ufffd"), f"after {pushed} tokens"
    return streamed + detokenizer.flush()


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("kind", list(TEXTS))
def test_deltas_join_to_the_full_decode(tokenizer, kind, skip_special_tokens):
    ids = encode(tokenizer, TEXTS[kind])
    full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    for rng in (None, random.Random(kind), random.Random(kind + "again")):
        assert stream_checking_each_push(tokenizer, ids, rng, skip_special_tokens) == full


@pytest.mark.parametrize("skip_special_tokens", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_random_token_ids_in_random_groups_join_to_the_full_decode(tokenizer, seed, skip_special_tokens):
    # every id the tokenizer knows, special and byte-fragment tokens included: invalid UTF-8 happens here
    rng, vocab_size = random.Random(seed), len(tokenizer.get_vocab())
    ids = [rng.randrange(vocab_size) for _ in range(500)]
    full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    assert stream_checking_each_push(tokenizer, ids, rng, skip_special_tokens) == full


def test_a_split_character_held_at_the_end_is_flushed_as_the_full_decode_shows_it(tokenizer):
    ids = encode(tokenizer, "wave 👋🏽")
    for cut in range(1, len(ids) + 1):
        detokenizer = IncrementalDetokenizer(tokenizer)
        streamed = detokenizer.push(ids[:cut]) + detokenizer.flush()
        assert streamed == tokenizer.decode(ids[:cut], skip_special_tokens=True)


def sentencepiece_style_tokenizer():
    """A tiny tokenizer with Llama's sentencepiece decoder (the leading space of a text stripped, characters as
    byte tokens), built with the tokenizers library; and the units its token ids come in: words, special tokens,
    and the byte tokens of one character."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581Hello": 3, "\u2581world": 4, "\u2581": 5, "!": 6, "ing": 7}
    vocab |= {f"<0x{byte:02X}>": 8 + i for i, byte in enumerate("😀好".encode())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.add_special_tokens(["<s>", "</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return tokenizer, [[1], [2], [3], [4], [5], [6], [7], [8, 9, 10, 11], [12, 13, 14]]


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_a_decoder_that_strips_the_leading_space_streams_like_the_full_decode(skip_special_tokens):
    # the window's context is what keeps " world" after "Hello" (or after a skipped special token) from being
    # decoded as the start of a text, "world"
    tokenizer, units = sentencepiece_style_tokenizer()
    assert tokenizer.decode([3, 4]) == "Hello world" and tokenizer.decode([4]) == "world"
    for seed in range(20):
        rng = random.Random(seed)
        ids = [token for _ in range(40) for token in rng.choice(units)]
        full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        assert stream_checking_each_push(tokenizer, ids, rng, skip_special_tokens, byte_level=False) == full, f"seed {seed}"


STOP_CASES = {
    # name: (text, stop strings, the stop string that ends the text)
    "split over many tokens": (TEXTS["code"], ["return fibonacci(n - 1)"], "return fibonacci(n - 1)"),
    "inside one token": ("x = 1\n    return x\n", ["etur"], "etur"),  # " return" is one token in both
    "several, the earliest wins": (TEXTS["code"], ["< 2", "NEVER", "\nprint"], "< 2"),
    "several, a later one listed first": (TEXTS["code"], ["{k:", "fibonacci(n - 2)"], "fibonacci(n - 2)"),
    "ending in a split character": ("Say Hi 👋🏽 there", ["Hi 👋"], "Hi 👋"),
    "CJK": (TEXTS["cjk"], ["世界"], "世界"),
    "never matches": (TEXTS["emoji"], ["NEVER", "🚀🚀🚀"], None),
    "a partial match at the end is plain text": ("hello wor", ["world"], None),
}


@pytest.mark.parametrize("case", list(STOP_CASES))
def test_stop_strings_cut_where_the_full_text_has_them(tokenizer, case):
    text, stops, matched = STOP_CASES[case]
    ids = encode(tokenizer, text)
    if case == "inside one token":
        assert [tokenizer.decode([t]) for t in encode(tokenizer, " return")] == [" return"]
    full = tokenizer.decode(ids, skip_special_tokens=True)
    expected = full[:full.index(matched)] if matched else full
    for groups in ("of one", "of 1..5", "all at once"):
        detokenizer = stream(tokenizer, {"of one": groups_of(ids, None), "of 1..5": groups_of(ids, random.Random(case)),
                                         "all at once": [ids]}[groups], stops)
        assert detokenizer.text == expected, f"groups {groups}"
        assert detokenizer.stopped == (matched is not None) and detokenizer.matched_stop == matched
        assert not any(stop in detokenizer.text for stop in stops)


def test_nothing_is_released_after_a_stop(tokenizer):
    detokenizer = IncrementalDetokenizer(tokenizer, ["STOP"])
    assert detokenizer.push(encode(tokenizer, "before STOP after")) == "before "
    assert detokenizer.push(encode(tokenizer, " more")) == "" and detokenizer.flush() == ""
    assert detokenizer.text == "before " and detokenizer.matched_stop == "STOP"


class CountingTokenizer:
    """The real tokenizer, counting the token ids each decode call is given."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.decoded_ids = 0

    def decode(self, ids, skip_special_tokens=True):
        self.decoded_ids += len(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.mark.parametrize("groups, bound", [("of one", 16), ("of 1..5", 48)])
def test_decode_work_per_push_stays_flat_at_2000_tokens(tokenizer, groups, bound):
    ids = []
    while len(ids) < 2000:
        ids += encode(tokenizer, "".join(TEXTS.values()))
    ids = ids[:2000]
    counting = CountingTokenizer(tokenizer)
    detokenizer = IncrementalDetokenizer(counting, ["NEVER MATCHES"])
    streamed, most = "", 0
    for group in groups_of(ids, random.Random(0) if groups == "of 1..5" else None):
        before = counting.decoded_ids
        streamed += detokenizer.push(group)
        most = max(most, counting.decoded_ids - before)
    assert streamed + detokenizer.flush() == tokenizer.decode(ids, skip_special_tokens=True)
    # at most 3 decodes, each of a window: the previous push's tokens as context, this push's tokens, and the
    # tokens of a character still open
    assert most <= bound, f"{most} token ids decoded in one push (groups {groups}) at {len(ids)} tokens"
    assert counting.decoded_ids <= 8 * len(ids)


def test_logprob_aligner_places_each_token_where_the_full_decode_does_with_flat_work(tokenizer):
    """server/logprobs.py's aligner: where each token's text ends is what decoding every token up to it gives
    (up to an incomplete character), and finding it costs a window per token, not the output so far."""
    from drafting.logprobs import TokenLogprob
    from server.logprobs import LogprobAligner

    ids = []
    while len(ids) < 2000:
        ids += encode(tokenizer, "".join(TEXTS.values()))
    ids = ids[:2000]
    counting = CountingTokenizer(tokenizer)
    aligner = LogprobAligner(counting)
    most = 0
    for group in groups_of(ids, random.Random(1)):
        before = counting.decoded_ids
        aligner.add([TokenLogprob(t, -1.0, []) for t in group])
        most = max(most, counting.decoded_ids - before)
    assert most <= 64 and counting.decoded_ids <= 12 * len(ids), f"{most} ids in one add, {counting.decoded_ids} in all"
    for i in range(0, len(ids), 37):  # the old definition, by full decodes, at every 37th token
        text = tokenizer.decode(ids[:i + 1], skip_special_tokens=True)
        whole = text.rstrip("\ufffd")
        assert aligner.pending[i][1:] == (len(whole), len(whole) == len(text)), f"token {i}"
    tokens = aligner.release(tokenizer.decode(ids, skip_special_tokens=True), final=True)
    assert "".join(t.text for t in tokens) == tokenizer.decode(ids, skip_special_tokens=True)
