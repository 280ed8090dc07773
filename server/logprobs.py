"""Token logprobs for the OpenAI `logprobs` fields: the engine's TokenLogprobs paired with the text they produced,
then shaped for /v1/completions or /v1/chat/completions.

Boundary: knows the tokenizer and the text the incremental detokenizer released; knows nothing about HTTP.
The values themselves come from the engine (drafting/logprobs.py: the target's raw distribution, before
temperature, top-k and top-p).

Token strings. A chosen token's string is the slice of the released text that it produced, so the tokens of a
choice join exactly to its text (a token that ends inside a multi-byte character gets "" and the next token the
whole character). An alternative's string is `tokenizer.decode([id])`; when the alternative is the chosen token
itself it takes the chosen token's string, so the two always agree. Tokens the text does not show are left out:
the EOS token that ended the choice, and every token whose text a stop string cut (even partly).
"""

from __future__ import annotations

from dataclasses import dataclass

from drafting.detokenize import IncrementalDetokenizer
from drafting.logprobs import TokenLogprob


@dataclass(frozen=True)
class EmittedToken:
    logprob: TokenLogprob | None  # None only for a scored prompt's first token (nothing predicts it)
    text: str  # the slice of the choice's text this token produced
    offset: int  # where that slice starts in the choice's generated text
    alternatives: list[tuple[str, float]]  # the top alternatives as (string, logprob), best first


class LogprobAligner:
    """Holds each generated token's logprob until the text it produced has been released.

    `add()` the logprobs of the tokens given to the detokenizer (same order, same filtering), then `release()`
    with the detokenizer's released text after each push: it returns the tokens that text now covers.
    Where each token's text ends comes from a detokenizer of its own (no stop strings), pushed one token at a
    time, so the cost per token is flat in the output length.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self._decoder = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
        self._decoded_length = 0  # length of the text of every token added so far, up to an incomplete character
        # (logprob, end of its text in the full decoded text, whether that text ends on a whole character)
        self.pending: list[tuple[TokenLogprob, int, bool]] = []
        self.emitted_end = 0  # the released text up to here belongs to tokens already returned
        self._strings: dict[int, str] = {}

    def add(self, logprobs: list[TokenLogprob]) -> None:
        for item in logprobs:
            self._decoded_length += len(self._decoder.push([item.token_id]))
            self.pending.append((item, self._decoded_length, not self._decoder.inside_character))

    def release(self, released: str, final: bool = False) -> list[EmittedToken]:
        """Tokens whose text `released` (the choice's text so far) now covers. `final`: generation ended without a
        stop string, so every pending token belongs to the released text (a held-back partial stop included)."""
        count = len(self.pending) if final else 0
        for i, (_, end, whole) in enumerate([] if final else self.pending):
            if end > len(released):
                break
            if whole:  # a token inside a split character goes out with the token that completes it
                count = i + 1
        batch, self.pending = self.pending[:count], self.pending[count:]
        out = []
        for i, (item, end, _) in enumerate(batch):
            if final and i == len(batch) - 1:
                end = len(released)  # the last token owns whatever flush released after it (e.g. a lone "\ufffd")
            end = min(max(end, self.emitted_end), len(released))
            text = released[self.emitted_end:end]
            out.append(EmittedToken(item, text, self.emitted_end, self._alternatives(item, text)))
            self.emitted_end = end
        return out

    def _alternatives(self, item: TokenLogprob, text: str) -> list[tuple[str, float]]:
        return [(text if token_id == item.token_id else self._string(token_id), logprob) for token_id, logprob in item.top]

    def _string(self, token_id: int) -> str:
        if token_id not in self._strings:
            self._strings[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return self._strings[token_id]


def prompt_token_logprobs(tokenizer, prompt_ids: list[int], logprobs: list[TokenLogprob | None]) -> list[EmittedToken]:
    """An echoed prompt's tokens with their logprobs (the first has none), strings sliced from the decoded prompt
    (special tokens included: they are part of what was scored)."""
    aligner = LogprobAligner(tokenizer, skip_special_tokens=False)
    aligner.add([lp or TokenLogprob(token_id, 0.0, []) for token_id, lp in zip(prompt_ids, logprobs)])
    tokens = aligner.release(tokenizer.decode(prompt_ids, skip_special_tokens=False), final=True)
    return [EmittedToken(None, t.text, t.offset, []) if lp is None else t for t, lp in zip(tokens, logprobs)]


def completion_logprobs(tokens: list[EmittedToken], offset: int = 0) -> dict:
    """/v1/completions `choices[i].logprobs`. top_logprobs holds the n asked-for alternatives per token (so
    logprobs=0 gives empty dicts; null for a scored prompt's first token, as OpenAI does); text_offset counts
    from the start of the choice's text (plus `offset`)."""
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob.logprob if t.logprob else None for t in tokens],
        "top_logprobs": [_first_per_string(t.alternatives) if t.logprob else None for t in tokens],
        "text_offset": [offset + t.offset for t in tokens],
    }


def _first_per_string(alternatives: list[tuple[str, float]]) -> dict[str, float]:
    """{string: logprob}; two ids with the same string keep the more likely one (alternatives come best first)."""
    top: dict[str, float] = {}
    for text, logprob in alternatives:
        top.setdefault(text, logprob)
    return top


def chat_logprobs(tokens: list[EmittedToken]) -> dict:
    """/v1/chat/completions `choices[i].logprobs`; `bytes` is the UTF-8 encoding of each token's string."""
    return {"content": [
        {"token": t.text, "logprob": t.logprob.logprob, "bytes": list(t.text.encode()),
         "top_logprobs": [{"token": text, "logprob": logprob, "bytes": list(text.encode())}
                          for text, logprob in t.alternatives]}
        for t in tokens], "refusal": None}
