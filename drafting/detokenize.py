"""Incremental detokenization with stop strings: token ids in, text deltas out, no stop string leaked.

The one place in drafting/ that touches a tokenizer (any object with `decode(ids, skip_special_tokens=)`),
so the CLI and the server stream text the same way. Text is held back while it could still be the start
of a stop string or ends in an incomplete UTF-8 sequence, and released once it cannot.
"""

from __future__ import annotations


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop_strings: list[str] | None = None, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in (stop_strings or []) if s]
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self.text = ""  # text released so far
        self.stopped = False  # a stop string matched; `text` ends before it
        self.matched_stop: str | None = None

    def push(self, token_ids: list[int]) -> str:
        """Add verified tokens; return the newly releasable text (empty once stopped)."""
        if self.stopped:
            return ""
        self.token_ids.extend(token_ids)
        full = self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens)
        stop_at = self._find_stop(full)
        if stop_at is not None:
            self.stopped = True
            return self._release(full[:stop_at])
        safe = len(full)
        if full.endswith("\ufffd"):  # a multi-byte character split across tokens
            safe = len(full.rstrip("\ufffd"))
        safe = min(safe, len(full) - self._partial_stop_length(full))
        return self._release(full[:safe])

    def flush(self) -> str:
        """At the end of generation: release what was held back (a partial stop is then plain text)."""
        if self.stopped:
            return ""
        full = self.tokenizer.decode(self.token_ids, skip_special_tokens=self.skip_special_tokens)
        return self._release(full)

    def _release(self, upto: str) -> str:
        if len(upto) <= len(self.text):
            return ""
        delta = upto[len(self.text):]
        self.text = upto
        return delta

    def _find_stop(self, full: str) -> int | None:
        longest = max((len(s) for s in self.stop_strings), default=0)
        search_from = max(0, len(self.text) - longest + 1)
        best = None
        for stop in self.stop_strings:
            at = full.find(stop, search_from)
            if at != -1 and (best is None or at < best):
                best, self.matched_stop = at, stop
        return best

    def _partial_stop_length(self, full: str) -> int:
        """Length of the longest suffix of `full` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(full)), longest, -1):
                if full.endswith(stop[:length]):
                    longest = length
                    break
        return longest
