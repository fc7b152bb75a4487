"""Streamed bodies cut into messages.

A durable endpoint tees its response, a stream of Server-Sent Events, to
`POST /v1/realtime/publish/tee?channel={runId}`: `SseFrames` cuts it at event boundaries (a blank
line), so every stored message is whole events. Subscribers then get whole events even when two
calls of the same run tee at once (parallel steps), and a subscriber that joins late starts on an
event boundary. A streamed publish (`Content-Type: text/stream`) is cut by `TextChunks` into
chunks of at most a given size, each valid UTF-8 on its own.
"""

from __future__ import annotations

import codecs

# Both line-ending conventions SSE allows; the SDKs write "\n".
_BOUNDARIES = ("\n\n", "\r\n\r\n")


class TextChunks:
    """Bytes in, text out: UTF-8 decoded across chunk boundaries (a character split between two
    network reads is kept for the next), invalid bytes replaced, NUL removed (PostgreSQL cannot
    store it), cut into pieces of at most `max_chars` characters."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max(1, max_chars)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _cut(self, text: str) -> list[str]:
        text = text.replace("\x00", "")
        return [text[i:i + self.max_chars] for i in range(0, len(text), self.max_chars)]

    def feed(self, data: bytes) -> list[str]:
        return self._cut(self._decoder.decode(data))

    def close(self) -> list[str]:
        return self._cut(self._decoder.decode(b"", final=True))


class SseFrames:
    """An SSE byte stream in, whole events out (each ending with its blank line).

    Text after the last boundary waits for the rest of its event. An event that grows past
    `max_chars` without ending is let out in pieces of that size (a subscriber then sees it split,
    which only matters if another tee interleaves), so memory stays bounded. `close()` lets out
    what remains (a stream that ends without its final blank line)."""

    def __init__(self, max_chars: int) -> None:
        self._text = TextChunks(max_chars)
        self.max_chars = self._text.max_chars
        self._pending = ""

    def _frames(self, text: str, *, final: bool) -> list[str]:
        self._pending += text
        out: list[str] = []
        while True:
            cut = -1
            for boundary in _BOUNDARIES:
                at = self._pending.find(boundary)
                if at >= 0 and (cut < 0 or at + len(boundary) < cut):
                    cut = at + len(boundary)
            if cut < 0:
                break
            frame, self._pending = self._pending[:cut], self._pending[cut:]
            out.extend(frame[i:i + self.max_chars] for i in range(0, len(frame), self.max_chars))
        while len(self._pending) > self.max_chars:
            out.append(self._pending[:self.max_chars])
            self._pending = self._pending[self.max_chars:]
        if final and self._pending:
            out.append(self._pending)
            self._pending = ""
        return out

    def feed(self, data: bytes) -> list[str]:
        return self._frames("".join(self._text.feed(data)), final=False)

    def close(self) -> list[str]:
        return self._frames("".join(self._text.close()), final=True)
