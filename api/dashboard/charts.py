"""Run charts (pgqueue/runs/charts.py) as SVG geometry the templates draw (templates/charts.html):
server-side, no script, no third-party library, inside the dashboard's CSP."""

from __future__ import annotations

from dataclasses import dataclass, field

from pgqueue.runs import charts

WIDTH, HEIGHT, PAD_TOP, PAD_BOTTOM = 600.0, 140.0, 8.0, 18.0


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass(frozen=True, slots=True)
class Line:
    points: str
    cls: str
    label: str


@dataclass(frozen=True, slots=True)
class Plot:
    id: str
    title: str
    y_max: str
    first: str
    last: str
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    width: float = WIDTH
    height: float = HEIGHT


def _nice(value: float) -> float:
    """The smallest 1-2-5 number at least `value` (an axis maximum)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value * 10:
        step /= 10
    for m in (1, 2, 5, 10):
        if step * m >= value:
            return step * m
    return step * 10


def _y(value: float, top: float) -> float:
    inner = HEIGHT - PAD_TOP - PAD_BOTTOM
    return PAD_TOP + inner * (1 - min(value / top, 1.0))


def _ms(value: float) -> str:
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 60_000:.1f} min"


def _label(chart: charts.Chart, i: int) -> str:
    at = chart.buckets[i].at
    return at.strftime("%H:%M") if chart.bucket_s < 3600 * 6 else at.strftime("%m-%d %H:%M")


def plots(chart: charts.Chart) -> list[Plot]:
    n = max(len(chart.buckets), 1)
    slot = WIDTH / n
    first, last = _label(chart, 0), _label(chart, n - 1)

    # runs per bucket: completed, failed, cancelled stacked; started as a line
    ended_top = max((b.completed + b.failed + b.cancelled for b in chart.buckets), default=0)
    top = _nice(max(ended_top, max((b.started for b in chart.buckets), default=0)))
    bars: list[Bar] = []
    started: list[str] = []
    for i, b in enumerate(chart.buckets):
        base = 0
        for value, cls in ((b.completed, "completed"), (b.failed, "failed"), (b.cancelled, "cancelled")):
            if value:
                y0, y1 = _y(base, top), _y(base + value, top)
                bars.append(Bar(i * slot + slot * 0.1, y1, slot * 0.8, y0 - y1, cls,
                                f"{_label(chart, i)}: {value} {cls}"))
                base += value
        started.append(f"{i * slot + slot / 2:.1f},{_y(b.started, top):.1f}")
    runs = Plot("chart-runs", "Runs per bucket (started: line; completed, failed, cancelled: bars)", f"{top:g}",
                first, last, bars, [Line(" ".join(started), "started", "started")])

    backlog_top = _nice(max((b.backlog for b in chart.buckets), default=0))
    backlog = Plot("chart-backlog", "Backlog: runs not over", f"{backlog_top:g}", first, last, [], [Line(
        " ".join(f"{i * slot + slot / 2:.1f},{_y(b.backlog, backlog_top):.1f}" for i, b in enumerate(chart.buckets)),
        "backlog", "backlog")])

    p_top = _nice(max((b.p99_ms or 0 for b in chart.buckets), default=0))
    lines = []
    for attr, cls in (("p50_ms", "p50"), ("p99_ms", "p99")):
        pts = [f"{i * slot + slot / 2:.1f},{_y(getattr(b, attr), p_top):.1f}"
               for i, b in enumerate(chart.buckets) if getattr(b, attr) is not None]
        lines.append(Line(" ".join(pts), cls, cls))
    durations = Plot("chart-durations", "Run duration, p50 and p99", _ms(p_top), first, last, [], lines)
    return [runs, backlog, durations]
