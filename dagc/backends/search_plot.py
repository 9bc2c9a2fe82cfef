"""The Pareto front of a search as a small SVG (`dagc search --plot FILE.svg`).

Serving: tokens/s per GPU against TPOT (higher and further left is better); prefill and
training: the latency or the iteration time against the peak memory per GPU (lower and
further left is better). Every evaluated layout that fits is a grey dot; the front is the
blue line, its points labelled with their layout. The style (and the axes' ticks) is the
batch sweep's (dagc/backends/plot.py); fixed number formats, so the same search gives the
same bytes.
"""

from __future__ import annotations

import os
from xml.sax.saxutils import escape

from dagc.backends.plot import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, _axis, _label
from dagc.backends.search_report import GB, Row, SearchReport
from dagc.outputs import write_text_atomically


def _figures(report: SearchReport) -> tuple[str, str, str, str]:
    """(x field, y field, x title, y title) of the report's mode."""
    if report.mode in ("decode", "serve"):
        return "tpot_s", "tokens_per_s_per_gpu", "TPOT (ms per output token)", "tokens/s per GPU"
    what = "iteration (ms)" if report.mode == "training" else "latency (ms)"
    return "memory_bytes", "time_s", "peak memory per GPU (GB)", what


def _value(row: Row, name: str) -> float:
    value = getattr(row, name)
    if name.endswith("_s"):
        return float(value) * 1e3
    if name == "memory_bytes":
        return float(value) / GB
    return float(value)


def pareto_svg(report: SearchReport) -> str:
    """The SVG text of the report's Pareto front."""
    x_name, y_name, x_title, y_title = _figures(report)
    shown = [
        r
        for r in report.points
        if getattr(r, x_name) is not None and getattr(r, y_name) is not None
    ]
    front = [r for r in report.pareto if r in shown]
    xs = [_value(r, x_name) for r in shown]
    ys = [_value(r, y_name) for r in shown]
    x_ticks, y_ticks = _axis(xs), _axis(ys)
    x_step, y_step = x_ticks[1] - x_ticks[0], y_ticks[1] - y_ticks[0]
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + inner_w * (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])

    def py(y: float) -> float:
        return TOP + inner_h * (1 - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2:.2f}" y="22" text-anchor="middle" font-size="14">'
        f"{escape(report.model)} on {report.gpus} GPUs: Pareto front ({report.mode})</text>",
    ]
    for value in x_ticks:
        x = px(value)
        out.append(
            f'<line x1="{x:.2f}" y1="{TOP}" x2="{x:.2f}" y2="{TOP + inner_h}" stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text x="{x:.2f}" y="{TOP + inner_h + 18}" text-anchor="middle">'
            f"{_label(value, x_step)}</text>"
        )
    for value in y_ticks:
        y = py(value)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.2f}" x2="{LEFT + inner_w}" y2="{y:.2f}" stroke="#e6e6e6"/>'
        )
        out.append(
            f'<text x="{LEFT - 8}" y="{y + 4:.2f}" text-anchor="end">{_label(value, y_step)}</text>'
        )
    out += [
        f'<line x1="{LEFT}" y1="{TOP + inner_h}" x2="{LEFT + inner_w}" y2="{TOP + inner_h}"'
        ' stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + inner_h}" stroke="black"/>',
        f'<text x="{LEFT + inner_w / 2:.2f}" y="{HEIGHT - 22}" text-anchor="middle">'
        f"{x_title}</text>",
        f'<text x="18" y="{TOP + inner_h / 2:.2f}" text-anchor="middle"'
        f' transform="rotate(-90 18 {TOP + inner_h / 2:.2f})">{y_title}</text>',
    ]
    for x, y in zip(xs, ys, strict=True):
        out.append(f'<circle cx="{px(x):.2f}" cy="{py(y):.2f}" r="2.5" fill="#bbbbbb"/>')
    points = [(px(_value(r, x_name)), py(_value(r, y_name)), r) for r in front]
    if len(points) > 1:
        path = " ".join(f"{x:.2f},{y:.2f}" for x, y, _ in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    for x, y, row in points:
        out.append(f'<circle cx="{x:.2f}" cy="{y:.2f}" r="4" fill="#1f77b4" stroke="#1f77b4"/>')
        label = escape(row.layout)
        if x > LEFT + inner_w / 2:
            out.append(
                f'<text x="{x - 6:.2f}" y="{y - 6:.2f}" text-anchor="end" font-size="10">'
                f"{label}</text>"
            )
        else:
            out.append(f'<text x="{x + 6:.2f}" y="{y - 6:.2f}" font-size="10">{label}</text>')
    out.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" font-size="10">'
        "grey: every evaluated layout that fits; pruned layouts are not shown</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_pareto(report: SearchReport, path: str | os.PathLike[str]) -> None:
    """Write the report's Pareto SVG to `path`, atomically (dagc.outputs)."""
    text = pareto_svg(report)
    write_text_atomically(path, lambda stream: stream.write(text))
