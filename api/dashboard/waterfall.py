"""A run's trace (pgqueue/runs/trace.py) laid out as a waterfall: one row per span, depth-first, each
a bar on the run's time axis. Positions are percentages of the axis, computed here so the page
draws them with plain CSS (no script, no third-party chart library): the width of a bar is its
span's duration over the run's, which the browser tests measure against the stored times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pgqueue.runs import trace

MIN_WIDTH_PCT = 0.15  # a bar of a few milliseconds in an hour-long run is still a visible mark
TICKS = 5


@dataclass(frozen=True, slots=True)
class Row:
    span: trace.Span
    depth: int
    wait_left: float  # the span's wait in the queue (queued_at .. started_at), in % of the axis
    wait_width: float
    left: float  # the span itself (started_at .. ended_at, or now while it runs), in % of the axis
    width: float
    open: bool  # still running or waiting: the bar runs to the axis' end

    @property
    def kind(self) -> str:
        return self.span.kind.value

    @property
    def status(self) -> str:
        return self.span.status.value.lower()


@dataclass(frozen=True, slots=True)
class Waterfall:
    start: datetime
    end: datetime
    rows: tuple[Row, ...]
    ticks: tuple[tuple[float, float], ...]  # (position %, milliseconds from the start)

    @property
    def total_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000


def layout(t: trace.Trace, now: datetime | None = None) -> Waterfall:
    """Rows for every span of the trace, on an axis from the run's creation to its end (or `now`)."""
    now = now or datetime.now(UTC)
    root = t.root
    start = root.queued_at
    ends = [s.ended_at or now for s in root.walk()]
    end = max([root.ended_at or now, *ends])
    total = max((end - start).total_seconds(), 1e-3)

    def pct(at: datetime) -> float:
        return min(max((at - start).total_seconds() / total * 100, 0.0), 100.0)

    rows: list[Row] = []

    def visit(span: trace.Span, depth: int) -> None:
        begun = span.started_at
        finish = span.ended_at or now
        if begun is None:  # queued, not started: only its wait shows
            wait_left, wait_width = pct(span.queued_at), pct(finish) - pct(span.queued_at)
            left, width = pct(finish), 0.0
        else:
            wait_left = pct(span.queued_at)
            wait_width = max(pct(begun) - wait_left, 0.0)
            left = pct(begun)
            width = max(pct(finish) - left, MIN_WIDTH_PCT)
            left = min(left, 100.0 - width)
        rows.append(Row(span, depth, wait_left, wait_width, left, width, span.ended_at is None))
        for child in span.children:
            visit(child, depth + 1)

    visit(root, 0)
    ticks = tuple((i * 100 / (TICKS - 1), total * 1000 * i / (TICKS - 1)) for i in range(TICKS))
    return Waterfall(start, end, tuple(rows), ticks)
