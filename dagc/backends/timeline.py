"""`dagc timeline`: when every operation runs, as a Perfetto trace or a Gantt chart.

Times are the critical-path computation's earliest starts: an operation runs
[start, start + cost]. The trace is Chrome's JSON Trace Event format
(https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU), which
https://ui.perfetto.dev and chrome://tracing open: one track per GPU, one complete ("X")
event per operation on each GPU it runs on. A GPU with operations on its communication
stream (`overlap`) gets a second track, `gpu3 comm`, so that overlapping operations never
share a track. The Gantt chart draws the same with matplotlib, a second row for such GPUs.

A training program's Gantt chart colours bars by phase (forward, recompute, backward, weight
gradient, iteration; communication hatched) instead of by kind, and its trace events carry
the phase in `args.phase`; prefill pictures and traces are as before.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dagc.backends.grouping import grouping_for
from dagc.backends.schedule import IntArray, Schedule
from dagc.backends.style import (
    COMMUNICATION_HATCH,
    CRITICAL,
    KINDS,
    PHASE_COLOUR,
    PHASE_LABEL,
    PHASES,
)
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import format_gpus
from dagc.ir.steps import Phase, Stream
from dagc.ir.terms import CostTerm, OpKind, TermKind
from dagc.outputs import temporary_beside, write_error, write_text_atomically

TRACE_FORMATS = ("json",)
GANTT_FORMATS = ("png", "svg", "pdf")
FORMATS = TRACE_FORMATS + GANTT_FORMATS
GANTT_MAX_OPS = 20_000  # above this many operations the Gantt chart draws blocks
MERGE_ABOVE = 8  # with more GPUs than this, GPUs with identical schedules share a row

# Okabe & Ito's colour-blind-safe palette, as in the graphviz pictures.
COLOUR = {
    OpKind.MATMUL: "#56B4E9",
    OpKind.ELEMENTWISE: "#F0E442",
    OpKind.COLLECTIVE: "#CC79A7",
    OpKind.TRANSFER: "#009E73",
}


# -- the trace ------------------------------------------------------------------------------


def shape_text(term: CostTerm) -> str:
    """What the operation works on: `[2097152, 4096] x [4096, 384]`, `8589934592 elements`."""
    if term.kind is TermKind.MATMUL:
        m, k, n = term.args
        return f"[{m}, {k}] x [{k}, {n}]"
    if term.kind.is_fused_attention:
        batch, heads, kv, seq, d_qk, d_v = term.args
        mask = "causal" if term.kind.is_causal else "full"
        which = ", backward" if term.kind.is_backward else ""
        return f"{batch} x {heads} heads ({kv} kv) x {seq} tokens, d {d_qk}/{d_v}, {mask}{which}"
    if term.kind is TermKind.BATCHED_MATMUL:
        b, m, k, n = term.args
        return f"{b} x [{m}, {k}] x [{k}, {n}]"
    if term.kind is TermKind.DECODE_ATTENTION:
        batch, heads, kv, context, d_qk, d_v = term.args
        return f"{batch} x {heads} heads ({kv} kv) x 1 token over {context} keys, d {d_qk}/{d_v}"
    if term.kind is TermKind.LATENT_DECODE_ATTENTION:
        batch, heads, context, d_c, d_r = term.args
        return f"{batch} x {heads} heads x 1 token over {context} latent keys, d {d_c}+{d_r}"
    if term.kind is TermKind.OPTIMIZER:
        return f"{term.args[0]} parameters"
    if term.kind is TermKind.ELEMENTWISE:
        return f"{term.args[0]} elements"
    if term.kind is TermKind.P2P:
        return f"{term.args[0]} bytes"
    if term.kind is TermKind.SYNC:
        return "waits for a transfer"
    return f"{term.args[0]} bytes per GPU, {term.args[1]} GPUs"


def _microseconds(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def trace_events(schedule: Schedule) -> list[dict[str, Any]]:
    """The trace's events: one track (thread) per GPU, then every operation on each GPU."""
    return [*_track_events(schedule), *_op_events(schedule)]


def _track_events(schedule: Schedule) -> Iterator[dict[str, Any]]:
    graph = schedule.graph
    home = schedule.group_of_gpu
    comm, base = _comm_gpus(graph), _comm_tid_base(graph)
    yield {"name": "process_name", "ph": "M", "pid": 0, "tid": 0,
           "args": {"name": f"dagc: {graph.program.model.name}"}}  # fmt: skip
    for gpu in graph.gpus():
        label = f"gpu{gpu} ({home[gpu]})" if gpu in home else f"gpu{gpu}"
        yield {"name": "thread_name", "ph": "M", "pid": 0, "tid": gpu,
               "args": {"name": label}}  # fmt: skip
        yield {"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": gpu,
               "args": {"sort_index": gpu}}  # fmt: skip
        if gpu in comm:  # the same sort index: the comm track follows its GPU's (lower tid)
            tid = base + gpu
            yield {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid,
                   "args": {"name": f"gpu{gpu} comm"}}  # fmt: skip
            yield {"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": tid,
                   "args": {"sort_index": gpu}}  # fmt: skip


def _comm_gpus(graph: DeviceGraph) -> frozenset[int]:
    """GPUs with operations on their communication stream."""
    steps = graph.full_steps()
    return frozenset(g for step in steps if step.stream is Stream.COMM for g in step.gpus)


def _comm_tid_base(graph: DeviceGraph) -> int:
    """GPU g's communication stream is track base + g: after every GPU's own track id."""
    return max(graph.gpus(), default=0) + 1


def _op_events(schedule: Schedule) -> Iterator[dict[str, Any]]:
    """Every (operation, GPU) event, by GPU, then start, then name; made one at a time."""
    graph = schedule.graph
    element_bytes = graph.program.workload.dtype.bytes
    base = _comm_tid_base(graph)
    training = graph.program.training is not None
    for op, gpu, ts in _event_order(schedule):
        term = graph.term_of(op)
        gpus = graph.gpus_of(op)
        step = graph.step_of(op)
        on_comm = step.stream is Stream.COMM
        event: dict[str, Any] = {
            "name": graph.name(op),
            "cat": schedule.template_kind[graph.template_of(op)],
            "ph": "X",
            "ts": ts,
            "dur": _microseconds(float(schedule.costs[op])),
            "pid": 0,
            "tid": base + gpu if on_comm else gpu,
            "args": {
                "term": term.pretty(),
                "shape": shape_text(term),
                "flops": term.flops(),
                "bytes": term.bytes_moved(element_bytes),
                "microbatch": graph.microbatch_of(op),
                "layer": graph.step_of(op).layer,
                "critical": bool(schedule.critical[op]),
                "gpus": format_gpus(gpus),
            },
        }
        if training:  # prefill traces keep their keys exactly
            event["args"]["phase"] = step.phase.value
        yield event


def _event_order(schedule: Schedule) -> Iterator[tuple[int, int, float]]:
    """(op, GPU, start in µs) of every event in trace order, from arrays of 8 bytes each.

    Sorting event dicts would hold every event in memory at once (~1 kB each); here only
    the keys are sorted, and names are compared only among events that tie on GPU and
    start.
    """
    graph = schedule.graph
    counts = np.fromiter(
        (len(graph.gpus_of(op)) for op in range(graph.num_ops)), np.int64, graph.num_ops
    )
    ops = np.repeat(np.arange(graph.num_ops, dtype=np.int64), counts)
    gpus = np.fromiter(
        (g for op in range(graph.num_ops) for g in graph.gpus_of(op)), np.int64, len(ops)
    )
    starts = schedule.path.start
    ts = np.fromiter((_microseconds(float(starts[op])) for op in ops), np.float64, len(ops))
    order = np.lexsort((ops, ts, gpus))
    position = 0
    while position < len(order):
        end = position + 1
        first = order[position]
        while end < len(order) and gpus[order[end]] == gpus[first] and ts[order[end]] == ts[first]:
            end += 1
        tied = order[position:end].tolist()
        if len(tied) > 1:
            tied.sort(key=lambda event: graph.name(int(ops[event])))
        for event in tied:
            yield int(ops[event]), int(gpus[event]), float(ts[event])
        position = end


def write_trace(schedule: Schedule, stream: TextIO) -> None:
    """The trace as JSON, one event per line (stable across runs), written as it is made."""
    stream.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
    events = itertools.chain(_track_events(schedule), _op_events(schedule))
    for index, event in enumerate(events):
        if index:
            stream.write(",\n")
        stream.write(json.dumps(event, sort_keys=True, ensure_ascii=False))
    stream.write("\n]}\n")


# -- the Gantt chart ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar of a Gantt row: [start, start + length], its kind, and whether critical."""

    start: float
    length: float
    kind: OpKind
    critical: bool
    comm: bool = False  # on the communication stream
    phase: Phase = Phase.FORWARD


@dataclass(frozen=True)
class Row:
    """One row of the Gantt chart: a GPU, or GPUs whose schedules are identical; `comm`
    marks the row of their communication stream."""

    gpus: tuple[int, ...]
    bars: tuple[Bar, ...]
    comm: bool = False

    def label(self, home: dict[int, str]) -> str:
        """`gpu3 (stage0)`, or `gpu[0..7] ×8 identical (attn)` for a merged row."""
        if len(self.gpus) == 1:
            name = f"gpu{self.gpus[0]}"
        else:
            name = f"{format_gpus(self.gpus)} ×{len(self.gpus)} identical"
        if self.comm:
            return f"{name} comm"
        groups = sorted({home[g] for g in self.gpus if g in home})
        return f"{name} ({', '.join(groups)})" if groups else name


def gantt_rows(schedule: Schedule, *, blocks: bool) -> list[Row]:
    """A row per GPU; with many GPUs, GPUs that do identical work share one. Bars per
    operation, or per block run (`blocks`)."""
    per_gpu = _block_bars(schedule) if blocks else _op_bars(schedule)
    gpus = sorted(per_gpu)
    if len(gpus) <= MERGE_ABOVE:
        return _by_stream([Row((g,), tuple(per_gpu[g])) for g in gpus])
    merged: dict[bytes, list[int]] = {}
    for gpu, key in _work_signatures(schedule).items():
        merged.setdefault(key, []).append(gpu)
    rows = []
    for members in merged.values():
        bars = [
            Bar(
                b.start,
                b.length,
                b.kind,
                any(per_gpu[g][i].critical for g in members),
                b.comm,
                b.phase,
            )
            for i, b in enumerate(per_gpu[members[0]])
        ]
        rows.append(Row(tuple(members), tuple(bars)))
    return _by_stream(rows)


def _by_stream(rows: list[Row]) -> list[Row]:
    """Each row's communication-stream bars moved to a row of their own just below it."""
    split: list[Row] = []
    for row in rows:
        comm = tuple(b for b in row.bars if b.comm)
        if not comm:
            split.append(row)
            continue
        split.append(Row(row.gpus, tuple(b for b in row.bars if not b.comm)))
        split.append(Row(row.gpus, comm, comm=True))
    return split


def _work_signatures(schedule: Schedule) -> dict[int, bytes]:
    """For every GPU, its work as bytes: each operation on it (collectives and transfers
    included) as (start, cost, cost term), in order. Two GPUs share a Gantt row only when
    these are equal: the same operations at the same times, not merely bars of the same
    span (a block's bar hides how much work it holds)."""
    graph = schedule.graph
    of = graph.templates_of
    ops = np.arange(graph.num_ops, dtype=np.int64)
    joint = schedule.template_joint[of(ops)]
    gpu = [schedule.template_gpu[of(ops[~joint])]]
    owner = [ops[~joint]]
    for op in ops[joint].tolist():
        participants = graph.gpus_of(op)
        gpu.append(np.asarray(participants, dtype=np.int64))
        owner.append(np.full(len(participants), op, dtype=np.int64))
    gpus, members = np.concatenate(gpu), np.concatenate(owner)
    start = schedule.path.start[members]
    term = graph.template_term[of(members)].astype(np.int64)
    order = np.lexsort((term, schedule.costs[members], start, gpus))
    gpus, members = gpus[order], members[order]
    bounds = np.flatnonzero(np.diff(gpus)) + 1
    signatures: dict[int, bytes] = {}
    for chunk in np.split(np.arange(len(gpus)), bounds):
        picked = members[chunk]
        rows = np.stack([schedule.path.start[picked], schedule.costs[picked]])
        terms = graph.template_term[of(picked)].astype(np.int64)
        signatures[int(gpus[chunk[0]])] = rows.tobytes() + terms.tobytes()
    return signatures


def _op_bars(schedule: Schedule) -> dict[int, list[Bar]]:
    graph = schedule.graph
    bars: dict[int, list[Bar]] = defaultdict(list)
    for op in range(graph.num_ops):
        step = graph.step_of(op)
        bar = Bar(
            float(schedule.path.start[op]),
            float(schedule.costs[op]),
            schedule.template_kind[graph.template_of(op)],
            bool(schedule.critical[op]),
            step.stream is Stream.COMM,
            step.phase,
        )
        for gpu in graph.gpus_of(op):
            bars[gpu].append(bar)
    return {gpu: sorted(row, key=lambda b: b.start) for gpu, row in bars.items()}


def _block_bars(schedule: Schedule) -> dict[int, list[Bar]]:
    """One bar per block run (as the block view draws it), GPU and micro-batch, and per
    collective or transfer."""
    graph = schedule.graph
    ops = np.arange(graph.num_ops, dtype=np.int64)
    nodes = grouping_for(schedule, "block").nodes_of(ops)
    order = np.argsort(nodes, kind="stable")
    _, starts = np.unique(nodes[order], return_index=True)
    bars: dict[int, list[Bar]] = defaultdict(list)
    for members in np.split(order, starts[1:]):
        bar = _span_bar(schedule, members)
        for gpu in graph.gpus_of(int(members[0])):
            bars[gpu].append(bar)
    return {gpu: sorted(row, key=lambda b: b.start) for gpu, row in bars.items()}


def _span_bar(schedule: Schedule, members: IntArray) -> Bar:
    of = schedule.graph.template_of
    seconds: dict[OpKind, float] = defaultdict(float)
    in_phase: dict[Phase, float] = defaultdict(float)
    for op in members.tolist():
        seconds[schedule.template_kind[of(op)]] += float(schedule.costs[op])
        in_phase[schedule.graph.step_of(op).phase] += float(schedule.costs[op])
    start = float(schedule.path.start[members].min())
    finish = float(schedule.path.finish[members].max())
    kind = max(KINDS, key=lambda k: seconds.get(k, -1.0))
    phase = max(PHASES, key=lambda p: in_phase.get(p, -1.0))
    # a collective or transfer is a bar of its own, so its first op tells the stream
    comm = schedule.graph.step_of(int(members[0])).stream is Stream.COMM
    critical = bool(schedule.critical[members].any())
    return Bar(start, finish - start, kind, critical, comm, phase)


def draw_gantt(
    schedule: Schedule, output: str | os.PathLike[str], *, max_ops: int = GANTT_MAX_OPS
) -> list[str]:
    """Draw the Gantt chart to `output` (.png, .svg or .pdf); returns notes for stderr.
    Above `max_ops` operations it draws one bar per block run, GPU and micro-batch."""
    blocks = schedule.graph.num_ops > max_ops
    rows = gantt_rows(schedule, blocks=blocks)
    figure = _figure(schedule, rows, blocks)
    fmt = Path(output).suffix.lower().lstrip(".")
    # No date in the metadata: SVG and PDF output stay byte-identical from run to run.
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {})
    from matplotlib import rc_context

    try:  # a fixed salt makes the SVG's element ids the same from run to run
        with rc_context({"svg.hashsalt": "dagc"}), temporary_beside(output) as temporary:
            figure.savefig(temporary, format=fmt, dpi=150, metadata=metadata)
    except OSError as error:
        raise write_error(output, error) from None
    if blocks:
        return [
            f"{schedule.graph.num_ops:,} operations are more than {max_ops:,}: the Gantt"
            " chart draws one bar per block run, GPU and micro-batch"
        ]
    return []


def _figure(schedule: Schedule, rows: list[Row], blocks: bool) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 1.6 + 0.42 * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    by_phase = schedule.graph.program.training is not None
    for index, row in enumerate(rows):
        if by_phase:
            _draw_phase_row(axes, len(rows) - 1 - index, row)
        else:
            _draw_row(axes, len(rows) - 1 - index, row)
    axes.set_yticks(range(len(rows)), [r.label(schedule.group_of_gpu) for r in reversed(rows)])
    axes.set_ylim(-0.6, len(rows) - 0.4)
    _time_axis(axes, schedule.total_s)
    axes.set_title("\n".join(_title(schedule, rows, blocks)), fontsize=11, loc="left")
    handles = _phase_legend(rows) if by_phase else _legend(rows)
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    axes.grid(axis="x", color="#DDDDDD", linewidth=0.6)
    axes.set_axisbelow(True)
    return figure


def _draw_row(axes: Any, y: float, row: Row) -> None:
    by_kind: dict[OpKind, list[tuple[float, float]]] = defaultdict(list)
    for bar in row.bars:
        if bar.length > 0:
            by_kind[bar.kind].append((bar.start, bar.length))
    for kind in KINDS:
        if by_kind[kind]:
            axes.broken_barh(by_kind[kind], (y - 0.35, 0.7), facecolors=COLOUR[kind],
                             edgecolor="white", linewidth=0.3)  # fmt: skip
    _outline_critical(axes, y, row)


def _outline_critical(axes: Any, y: float, row: Row) -> None:
    critical = _spans([(b.start, b.length) for b in row.bars if b.critical and b.length > 0])
    if critical:
        axes.broken_barh(critical, (y - 0.35, 0.7), facecolors="none", edgecolor=CRITICAL,
                         linewidth=1.4)  # fmt: skip


def _draw_phase_row(axes: Any, y: float, row: Row) -> None:
    """A training program's row: bars coloured by phase, communication hatched."""
    groups: dict[tuple[Phase, bool], list[tuple[float, float]]] = defaultdict(list)
    for bar in row.bars:
        if bar.length > 0:
            groups[bar.phase, bar.kind.is_communication].append((bar.start, bar.length))
    for phase in PHASES:
        for communication in (False, True):
            spans = groups.get((phase, communication))
            if spans:
                axes.broken_barh(spans, (y - 0.35, 0.7), facecolors=PHASE_COLOUR[phase],
                                 edgecolor="white", linewidth=0.3,
                                 hatch=COMMUNICATION_HATCH if communication else None)  # fmt: skip
    _outline_critical(axes, y, row)


def _spans(bars: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Back-to-back bars joined, so that a run of critical operations gets one outline."""
    spans: list[tuple[float, float]] = []
    for start, length in sorted(bars):
        if spans and start <= spans[-1][0] + spans[-1][1] * (1 + 1e-9):
            first, previous = spans[-1]
            spans[-1] = (first, max(previous, start + length - first))
        else:
            spans.append((start, length))
    return spans


def _time_axis(axes: Any, total: float) -> None:
    from matplotlib.ticker import FuncFormatter

    scale, unit = (1.0, "s") if total >= 1 else (1e-3, "ms")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:g}"))
    axes.set_xlabel(f"time ({unit}) from the start, critical-path schedule")
    axes.set_xlim(0, total * 1.01 if total else 1)


def _title(schedule: Schedule, rows: list[Row], blocks: bool) -> list[str]:
    program = schedule.graph.program
    m = program.workload.microbatches
    gpus = len(schedule.graph.gpus())
    gpu_rows = sum(not row.comm for row in rows)
    merged = " (GPUs with identical work share a row)" if gpu_rows < gpus else ""
    what = "blocks" if blocks else "operations"
    by_phase = ", coloured by phase" if program.training is not None else ""
    return [
        f"{program.model.name}: {gpus} GPUs ({schedule.gpu_preset}),"
        f" {m} micro-batch{'es' if m > 1 else ''}; critical path"
        f" {schedule.total_s:.4g} s under {schedule.cost_model}",
        f"{what} by GPU{merged}{by_phase}; critical path outlined",
    ]


def _legend(rows: list[Row]) -> list[Any]:
    from matplotlib.patches import Patch

    shown = {bar.kind for row in rows for bar in row.bars}
    handles = [Patch(facecolor=COLOUR[k], label=k) for k in KINDS if k in shown]
    handles.append(Patch(facecolor="none", edgecolor=CRITICAL, linewidth=1.4, label="critical"))
    return handles


def _phase_legend(rows: list[Row]) -> list[Any]:
    """The phases drawn, then communication's hatching and the critical outline."""
    from matplotlib.patches import Patch

    shown = {bar.phase for row in rows for bar in row.bars}
    handles = [Patch(facecolor=PHASE_COLOUR[p], label=PHASE_LABEL[p]) for p in PHASES if p in shown]
    if any(bar.kind.is_communication for row in rows for bar in row.bars):
        hatched = Patch(
            facecolor="white",
            edgecolor="#555555",
            hatch=COMMUNICATION_HATCH,
            label="communication (hatched)",
        )
        handles.append(hatched)
    handles.append(Patch(facecolor="none", edgecolor=CRITICAL, linewidth=1.4, label="critical"))
    return handles


# -- writing --------------------------------------------------------------------------------


def write_timeline(schedule: Schedule, output: str | os.PathLike[str]) -> list[str]:
    """Write a trace (.json) or a Gantt chart (.png, .svg, .pdf); returns notes for stderr."""
    if Path(output).suffix.lower() == ".json":
        try:
            write_text_atomically(output, lambda stream: write_trace(schedule, stream))
        except OSError as error:
            raise write_error(output, error) from None
        return []
    return draw_gantt(schedule, output)
