"""The serving curve of a batch sweep as a small SVG: tokens/s per GPU against TPOT.

`dagc analyze FILE --batch-sweep ... --plot FILE.svg`. The curve serving people read: each
point is one batch (labelled with it), further right is slower per token, higher is more
throughput per GPU. The SVG is written by hand, with fixed number formats and no
timestamps, so the same sweep always gives the same bytes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from xml.sax.saxutils import escape

from dagc.analysis.serving import Sweep, SweepRow
from dagc.outputs import write_text_atomically

WIDTH, HEIGHT = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 84, 24, 44, 64  # margins around the plotting area
TICKS = 5  # about this many intervals per axis
INNER_W, INNER_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM  # the plotting area


def nice_step(top: float, ticks: int = TICKS) -> float:
    """A tick interval of 1, 2 or 5 times a power of ten giving at most `ticks` intervals
    up to `top` (1 for an empty axis)."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw * (1 - 1e-12):
            return factor * power
    return 10 * power  # not reached: factor 10 always suffices


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-12))


def _label(value: float, step: float) -> str:
    decimals = _decimals(step)
    return f"{value:,.{decimals}f}"


def _axis(values: list[float]) -> list[float]:
    """The tick values of an axis showing `values`: from 0, or, when the values lie in the
    upper half of their range from 0, from a tick below the smallest (a curve crowded at
    one edge says nothing)."""
    low, high = min(values, default=0.0), max(values, default=0.0)
    first = 0
    step = nice_step(high)
    if low > high / 2:
        step = nice_step(high - low) if high > low else nice_step(high)
        first = math.floor(low / step + 1e-9)
    last = max(first + 1, math.ceil(high / step - 1e-9))
    return [step * i for i in range(first, last + 1)]


def _plotted(sweep: Sweep) -> list[SweepRow]:
    """The rows with both figures, by batch (the curve joins them in that order)."""
    rows = [r for r in sweep.rows if r.tpot_s is not None and r.tokens_per_s_per_gpu is not None]
    return sorted(rows, key=lambda row: row.batch)


@dataclass(frozen=True)
class Frame:
    """A plot's picture so far (title, grid, ticks, axes and their titles) and the maps
    from data to picture coordinates."""

    lines: list[str]
    x_ticks: list[float]
    y_ticks: list[float]

    def px(self, x: float) -> float:
        return LEFT + INNER_W * (x - self.x_ticks[0]) / (self.x_ticks[-1] - self.x_ticks[0])

    def py(self, y: float) -> float:
        return TOP + INNER_H * (1 - (y - self.y_ticks[0]) / (self.y_ticks[-1] - self.y_ticks[0]))


def frame(xs: list[float], ys: list[float], title: str, x_title: str, y_title: str) -> Frame:
    """The frame of a plot of these points: `title` (escaped here) on top, ticks from
    `_axis`, light grid lines, black axes and their titles."""
    x_ticks, y_ticks = _axis(xs), _axis(ys)
    x_step, y_step = x_ticks[1] - x_ticks[0], y_ticks[1] - y_ticks[0]
    box = Frame([], x_ticks, y_ticks)
    out = box.lines
    out += [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2:.2f}" y="22" text-anchor="middle" font-size="14">'
        f"{escape(title)}</text>",
    ]
    for value in x_ticks:
        x = box.px(value)
        out.append(
            f'<line x1="{x:.2f}" y1="{TOP}" x2="{x:.2f}" y2="{TOP + INNER_H}" stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text x="{x:.2f}" y="{TOP + INNER_H + 18}" text-anchor="middle">'
            f"{_label(value, x_step)}</text>"
        )
    for value in y_ticks:
        y = box.py(value)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.2f}" x2="{LEFT + INNER_W}" y2="{y:.2f}" stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text x="{LEFT - 8}" y="{y + 4:.2f}" text-anchor="end">{_label(value, y_step)}</text>'
        )
    out += [
        f'<line x1="{LEFT}" y1="{TOP + INNER_H}" x2="{LEFT + INNER_W}" y2="{TOP + INNER_H}"'
        ' stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + INNER_H}" stroke="black"/>',
        f'<text x="{LEFT + INNER_W / 2:.2f}" y="{HEIGHT - 22}" text-anchor="middle">'
        f"{x_title}</text>",
        f'<text x="18" y="{TOP + INNER_H / 2:.2f}" text-anchor="middle"'
        f' transform="rotate(-90 18 {TOP + INNER_H / 2:.2f})">{y_title}</text>',
    ]
    return box


def sweep_svg(sweep: Sweep) -> str:
    """The SVG text of the sweep's curve."""
    rows = _plotted(sweep)
    xs = [row.tpot_s * 1e3 for row in rows if row.tpot_s is not None]
    ys = [row.tokens_per_s_per_gpu for row in rows if row.tokens_per_s_per_gpu is not None]
    title = f"{sweep.source}: tokens/s per GPU against TPOT ({sweep.mode.value})"
    box = frame(xs, ys, title, "TPOT (ms per output token)", "tokens/s per GPU")
    out, px, py, inner_w = box.lines, box.px, box.py, INNER_W
    points = [(px(x), py(y), row) for x, y, row in zip(xs, ys, rows, strict=True)]
    if len(points) > 1:
        path = " ".join(f"{x:.2f},{y:.2f}" for x, y, _ in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    for x, y, row in points:
        fill = "#1f77b4" if row.fits else "white"
        out.append(
            f'<circle cx="{x:.2f}" cy="{y:.2f}" r="4" fill="{fill}" stroke="#1f77b4"'
            ' stroke-width="1.5"/>'
        )
        # a label near the right edge goes to the point's left, inside the picture
        if x > LEFT + inner_w - 40:
            out.append(
                f'<text x="{x - 6:.2f}" y="{y - 6:.2f}" text-anchor="end">{row.batch}</text>'
            )
        else:
            out.append(f'<text x="{x + 6:.2f}" y="{y - 6:.2f}">{row.batch}</text>')
    if any(not row.fits for row in rows):
        out.append(
            f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" font-size="10">'
            "hollow: the batch does not fit in memory</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(path: str | os.PathLike[str], sweep: Sweep) -> None:
    """Write the sweep's SVG to `path`, atomically (dagc.outputs)."""
    text = sweep_svg(sweep)
    write_text_atomically(path, lambda stream: stream.write(text))
