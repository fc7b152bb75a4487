"""Streamed bodies cut into messages (pgqueue/realtime/streams.py): a durable endpoint's SSE stream
comes out as whole events however the network split it; text stays valid UTF-8 across reads;
nothing grows past its bound."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pgqueue.realtime import streams

EVENTS = [
    'event: inngest.metadata\ndata: {"runId":"01RUN"}\n\n',
    'event: inngest.stream\ndata: {"data":"h\\u00e9llo \\ud83d\\ude00","hashedStepId":"ab"}\n\n',
    'event: inngest.commit\ndata: {"hashedStepId":"ab"}\n\n',
    'event: inngest.response\ndata: {"status":"succeeded",'
    '"response":{"body":"{}","headers":{},"statusCode":200}}\n\n',
]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if data[a:b]]


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_events_come_out_whole_however_the_bytes_were_split(cuts: list[int]) -> None:
    text = "".join(EVENTS) + "é" * 3 + "\n\n"  # a last event of multibyte characters
    frames = streams.SseFrames(max_chars=10_000)

    out = [f for piece in _split(text.encode(), cuts) for f in frames.feed(piece)] + frames.close()

    assert out == [*EVENTS, "ééé\n\n"]


def test_a_stream_that_ends_mid_event_lets_the_rest_out_on_close() -> None:
    frames = streams.SseFrames(max_chars=1000)
    assert frames.feed(b"data: 1\n\ndata: 2") == ["data: 1\n\n"]
    assert frames.close() == ["data: 2"]
    assert frames.close() == []


def test_crlf_boundaries_count_and_an_overlong_event_is_let_out_in_bounded_pieces() -> None:
    frames = streams.SseFrames(max_chars=12)
    assert frames.feed(b"data: a\r\n\r\ndata: b\n\n") == ["data: a\r\n\r\n", "data: b\n\n"]
    out = frames.feed(b"x" * 35)
    assert out == ["x" * 12] * 2 and frames.close() == ["x" * 11]


def test_text_chunks_stay_valid_across_reads_and_drop_nul() -> None:
    text = "añb😀c\x00d" * 50
    data = text.encode()
    chunks = streams.TextChunks(max_chars=7)
    rng = random.Random(7)
    pieces: list[str] = []
    at = 0
    while at < len(data):
        step = rng.randint(1, 5)
        pieces += chunks.feed(data[at:at + step])
        at += step
    pieces += chunks.close()
    assert "".join(pieces) == text.replace("\x00", "")
    assert all(0 < len(p) <= 7 for p in pieces)


def test_invalid_utf8_is_replaced_not_refused() -> None:
    chunks = streams.TextChunks(max_chars=100)
    assert chunks.feed(b"ok \xff\xfe end") + chunks.close() == ["ok \ufffd\ufffd end"]
