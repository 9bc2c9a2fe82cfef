"""The result of `dagc search` as text, markdown or JSON, and its Pareto front.

Reads only what the search gives (a `SearchReport`: the ranked layouts' figures and the
counts); fixed number formats, so the same search prints the same bytes whatever ran it
(the search's wall time is the one figure that varies: `timing=False` leaves it out).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

GB = 1e9


@dataclass(frozen=True)
class Row:
    """One ranked layout's figures (seconds, bytes; None where the mode has none)."""

    rank: int
    layout: str
    score: float
    time_s: float
    tokens_per_s_per_gpu: float | None
    memory_bytes: int
    mfu: float
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    iteration_s: float | None = None
    max_batch: int | None = None


@dataclass(frozen=True)
class SearchReport:
    """What a search report shows."""

    model: str
    source: str
    mode: str  # prefill, decode, serve or training
    gpus: int
    gpu: str
    node_size: int
    objective: str
    objective_text: str
    top: int
    rows: tuple[Row, ...]
    considered: int
    invalid: dict[str, int]
    over_memory_bound: int
    over_sla_bound: int
    pruned_by_bound: int
    evaluated: int
    over_memory: int
    over_sla: int
    seconds: float
    sla: str = ""
    pareto: tuple[Row, ...] = ()
    points: tuple[Row, ...] = ()  # every evaluated layout that fits (the plot's dots)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.3f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _columns(report: SearchReport) -> list[tuple[str, Any]]:
    """(header, cell function) of the mode's table."""
    columns: list[tuple[str, Any]] = [
        ("rank", lambda r: str(r.rank)),
        ("layout", lambda r: r.layout),
    ]
    if report.mode == "prefill":
        columns.append(("latency", lambda r: _ms(r.time_s)))
    elif report.mode == "decode":
        columns.append(("TPOT", lambda r: _ms(r.tpot_s)))
    elif report.mode == "serve":
        columns += [
            ("TTFT", lambda r: _ms(r.ttft_s)),
            ("TPOT", lambda r: _ms(r.tpot_s)),
            ("e2e", lambda r: _ms(r.e2e_s)),
        ]
    else:
        columns.append(("iteration", lambda r: _ms(r.iteration_s)))
    columns += [
        ("tokens/s/GPU", lambda r: _rate(r.tokens_per_s_per_gpu)),
        ("memory", lambda r: f"{r.memory_bytes / GB:.1f} GB"),
        ("MFU", lambda r: f"{r.mfu:.1%}"),
    ]
    if report.mode in ("decode", "serve"):
        columns.append(("max batch", lambda r: "-" if r.max_batch is None else str(r.max_batch)))
    return columns


def counts_lines(report: SearchReport, *, timing: bool = True) -> list[str]:
    """The counts, in words: they add up to the layouts considered."""
    invalid = sum(report.invalid.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in report.invalid.items())
    lines = [
        f"layouts considered: {report.considered}",
        f"  invalid: {invalid}" + (f" ({reasons})" if reasons else ""),
        f"  over memory by bound: {report.over_memory_bound}",
    ]
    if report.sla:
        lines.append(f"  over the SLA by bound: {report.over_sla_bound}")
    lines += [
        f"  pruned by bound (cannot beat the {report.top}th best): {report.pruned_by_bound}",
        f"  evaluated: {report.evaluated} ({report.over_memory} over memory"
        + (f", {report.over_sla} over the SLA" if report.sla else "")
        + ")",
    ]
    if timing:
        rate = report.considered / report.seconds if report.seconds > 0 else 0.0
        lines.append(f"search time: {report.seconds:.2f} s ({rate:,.0f} layouts/s)")
    return lines


def _header(report: SearchReport) -> list[str]:
    lines = [
        f"dagc search: {report.model} ({report.source}), {report.mode} on {report.gpus} ×"
        f" {report.gpu} (nodes of {report.node_size})",
        f"objective: {report.objective_text}" + (f"; SLA: {report.sla}" if report.sla else ""),
    ]
    return lines


def write_text(report: SearchReport, out: TextIO, *, timing: bool = True) -> None:
    columns = _columns(report)
    table = [[header for header, _ in columns]]
    table += [[cell(row) for _, cell in columns] for row in report.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [*_header(report), ""]
    if not report.rows:
        lines.append("no layout of the space fits (see the counts)")
    for line in table if report.rows else []:
        cells = [
            cell.ljust(width) if i == 1 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines += ["", *counts_lines(report, timing=timing)]
    out.write("\n".join(lines) + "\n")


def write_markdown(report: SearchReport, out: TextIO, *, timing: bool = True) -> None:
    columns = _columns(report)
    lines = [f"# {_header(report)[0]}", "", _header(report)[1], ""]
    lines.append("| " + " | ".join(h for h, _ in columns) + " |")
    lines.append("|" + "|".join("---" if i == 1 else "---:" for i in range(len(columns))) + "|")
    for row in report.rows:
        lines.append("| " + " | ".join(cell(row) for _, cell in columns) + " |")
    lines += ["", *(f"- {line.strip()}" for line in counts_lines(report, timing=timing))]
    out.write("\n".join(lines) + "\n")


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "rank": row.rank,
        "layout": row.layout,
        "score": row.score,
        "time_s": row.time_s,
        "ttft_s": row.ttft_s,
        "tpot_s": row.tpot_s,
        "e2e_s": row.e2e_s,
        "iteration_s": row.iteration_s,
        "tokens_per_s_per_gpu": row.tokens_per_s_per_gpu,
        "memory_bytes": row.memory_bytes,
        "mfu": row.mfu,
        "max_batch": row.max_batch,
    }


def write_json(report: SearchReport, out: TextIO, *, timing: bool = True) -> None:
    data: dict[str, Any] = {
        "model": report.model,
        "source": report.source,
        "mode": report.mode,
        "gpus": report.gpus,
        "gpu": report.gpu,
        "node_size": report.node_size,
        "objective": report.objective,
        "sla": report.sla or None,
        "top": report.top,
        "ranked": [_row_json(r) for r in report.rows],
        "pareto": [_row_json(r) for r in report.pareto],
        "counts": {
            "considered": report.considered,
            "invalid": report.invalid,
            "over_memory_bound": report.over_memory_bound,
            "over_sla_bound": report.over_sla_bound,
            "pruned_by_bound": report.pruned_by_bound,
            "evaluated": report.evaluated,
            "over_memory": report.over_memory,
            "over_sla": report.over_sla,
        },
    }
    if timing:
        data["seconds"] = report.seconds
    json.dump(data, out, indent=2)
    out.write("\n")


def pareto_front(rows: Sequence[Row], x: str, y: str, *, maximise_y: bool) -> tuple[Row, ...]:
    """The rows no other row beats on both `x` (lower is better) and `y`, by x."""

    def key(row: Row) -> tuple[float, float]:
        value = getattr(row, y) or 0.0
        return (getattr(row, x), -value if maximise_y else value)

    front: list[Row] = []
    best: float | None = None
    for row in sorted(rows, key=lambda r: (*key(r), r.layout)):
        value = key(row)[1]
        if best is None or value < best:
            front.append(row)
            best = value
    return tuple(front)
