"""Incremental detokenization with stop strings: token ids in, text deltas out, no stop string leaked.

The one place in drafting/ that touches a tokenizer (any object with `decode(ids, skip_special_tokens=)`),
so the CLI and the server stream text the same way. Text is held back while it could still be the start
of a stop string or ends in an incomplete UTF-8 sequence, and released once it cannot.

Cost per push is flat in the output length (the offsets scheme of vLLM and Hugging Face TGI): only a window
of recent tokens is decoded, never the whole output. The window is token_ids[prefix_offset:]; the tokens in
[prefix_offset, read_offset) have produced their text already and stay as context, so the window decodes the
tokens after them as the full decode does (a decoder that strips the leading space of a text, the bytes of one
character over several tokens). The new text is decode(window) minus decode(context). When a push ends inside
a character, the text before it goes out and the window moves to a token boundary before it, so pushes that
each end inside a character (CJK, emoji, in groups) do not widen the window.

The deltas join to the full decode for byte-level BPE tokenizers (smollm2, qwen2.5). A byte-fallback decoder
(sentencepiece) shows a run of byte tokens that never becomes valid UTF-8 as replacement characters over the
whole run, including characters of it that had already gone out here.
"""

from __future__ import annotations

INCOMPLETE = "\ufffd"  # what a decoder gives for a UTF-8 sequence cut short (or invalid)


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop_strings: list[str] | None = None, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in (stop_strings or []) if s]
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self._released: list[str] = []  # the deltas released so far; `text` joins them
        self.stopped = False  # a stop string matched; `text` ends before it
        self.matched_stop: str | None = None
        self._prefix_offset = 0  # the decode window is token_ids[prefix_offset:]
        self._read_offset = 0  # tokens from here on have not produced their text yet
        self._context_text: str | None = ""  # decode(token_ids[prefix_offset:read_offset]); None: not decoded yet
        self._taken_from_window = 0  # chars of the window's new text already passed on (before an incomplete char)
        self._held = ""  # decoded, not released: it could be the start of a stop string
        self.inside_character = False  # the last push ended inside a character (its text is not out yet)

    @property
    def text(self) -> str:
        """The text released so far. Joined when read: appending each delta to one string would copy the whole
        output on every push."""
        if len(self._released) > 1:
            self._released[:] = ["".join(self._released)]
        return self._released[0] if self._released else ""

    def push(self, token_ids: list[int]) -> str:
        """Add verified tokens; return the newly releasable text (empty once stopped)."""
        if self.stopped:
            return ""
        self.token_ids.extend(token_ids)
        return self._release(self._held + self._new_text(final=False), final=False)

    def flush(self) -> str:
        """At the end of generation: release what was held back (a partial stop is then plain text, an incomplete
        character its replacement character, as the full decode shows them)."""
        if self.stopped:
            return ""
        return self._release(self._held + self._new_text(final=True), final=True)

    def _new_text(self, final: bool) -> str:
        """Text the tokens since the last call produced, up to an incomplete character at the end (unless final)."""
        if self._context_text is None:
            self._context_text = self._decode(self._prefix_offset, self._read_offset)
        window = self._decode(self._prefix_offset, len(self.token_ids))
        start = len(self._context_text) + self._taken_from_window
        # the text before an incomplete character at the end is final: more bytes only complete that character
        stable_end = len(window) if final else len(window.rstrip(INCOMPLETE))
        new = window[start:stable_end] if stable_end > start else ""
        self.inside_character = stable_end != len(window)
        if stable_end == len(window):
            if len(window) > len(self._context_text):
                self._move_window(len(self.token_ids), len(window), stable_end)
            # else the text did not grow (skipped special tokens): the window keeps its context and widens, as a
            # decoder may treat the first token of a text differently (a stripped leading space)
        else:
            self._taken_from_window += len(new)
            self._move_window_before_the_incomplete_character(window, stable_end)
        return new

    def _move_window_before_the_incomplete_character(self, window: str, stable_end: int) -> None:
        """Move the window up to a token boundary before the incomplete character, if one is near: otherwise the
        window would keep every token of pushes that each end inside a character (CJK or emoji in groups)."""
        # a UTF-8 character has at most 4 bytes, so an incomplete one starts in one of the last 3 tokens
        for read_to in range(len(self.token_ids) - 1, max(self._read_offset, len(self.token_ids) - 4), -1):
            text = self._decode(self._prefix_offset, read_to)
            if (len(text) > len(self._context_text) and not text.endswith(INCOMPLETE) and len(text) <= stable_end
                    and window.startswith(text)):
                self._move_window(read_to, len(text), stable_end)
                return

    def _move_window(self, read_to: int, text_to: int, passed_to: int) -> None:
        """The tokens before `read_to` have produced their text; those from the read offset on become the next
        window's context. `text_to`: length of decode(token_ids[prefix_offset:read_to]); `passed_to`: how much of
        the window's text is passed on (beyond `text_to` when later tokens' text, before an incomplete character,
        is out too)."""
        self._prefix_offset, self._read_offset = self._read_offset, read_to
        self._context_text, self._taken_from_window = None, passed_to - text_to

    def _decode(self, start: int, end: int) -> str:
        if start == end:
            return ""
        return self.tokenizer.decode(self.token_ids[start:end], skip_special_tokens=self.skip_special_tokens)

    def _release(self, pending: str, final: bool) -> str:
        """Release `pending` (all text not released yet) up to a stop string or a possible start of one."""
        stop_at = self._find_stop(pending)
        if stop_at is not None:
            self.stopped, self._held = True, ""
            released = pending[:stop_at]
        else:
            keep = 0 if final else self._partial_stop_length(pending)
            released, self._held = pending[:len(pending) - keep], pending[len(pending) - keep:]
        if released:
            self._released.append(released)
        return released

    def _find_stop(self, pending: str) -> int | None:
        """Where the earliest stop string starts in `pending`. Searching the released text is not needed: any of
        its suffixes that starts a stop string was held back, so a stop string cannot begin there."""
        best = None
        for stop in self.stop_strings:
            at = pending.find(stop)
            if at != -1 and (best is None or at < best):
                best, self.matched_stop = at, stop
        return best

    def _partial_stop_length(self, pending: str) -> int:
        """Length of the longest suffix of `pending` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(pending)), longest, -1):
                if pending.endswith(stop[:length]):
                    longest = length
                    break
        return longest
