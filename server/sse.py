"""Server-sent events: the `data:` framing of OpenAI streams and a streaming response that always cleans up.

Boundary: bytes on the wire; what the chunks hold is the endpoints' business.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse


class JobStreamResponse(StreamingResponse):
    """An SSE response that always closes its generator (cancelling the engine) and releases its running slot,
    even when the client disconnects before the first chunk."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await self._on_close()


def sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


DONE = sse("[DONE]")
