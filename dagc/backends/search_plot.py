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

from dagc.backends.plot import HEIGHT, INNER_W, LEFT, RIGHT, WIDTH, frame
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
    title = f"{report.model} on {report.gpus} GPUs: Pareto front ({report.mode})"
    box = frame(xs, ys, title, x_title, y_title)
    out, px, py, inner_w = box.lines, box.px, box.py, INNER_W
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
