"""Streams: `overlap` puts a block's communication on its GPUs' communication stream.

Every expected time here is derived by hand in the test's docstring from the semantics'
order rules (program order per GPU and stream, data edges unchanged), never copied from
dagc's output. Costs are 2·M·K·N for each matrix product, a fixed time per kind of
transfer, and 0 for everything else, so the closed forms stay small.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

import dagc
from dagc.analysis.analyze import analyze
from dagc.analysis.costs import CostModel
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.api import build_schedule
from dagc.backends.timeline import gantt_rows, trace_events
from dagc.expand import expand
from dagc.ir.device import DeviceGraph
from dagc.ir.steps import Stream
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.verify import verify
from dagc.passes.manager import run_passes
from dagc.passes.streams import assign_streams


def expand_text(text: str) -> DeviceGraph:
    return expand(dagc.compile_text(text, "t.dag")).graph


def seconds(graph: DeviceGraph, transfer: dict[TermKind, float]) -> np.ndarray:
    """Per-op costs: 2·M·K·N for Get_Time, `transfer[kind]` for communication, else 0."""
    term_costs = np.zeros(len(graph.terms), dtype=np.float64)
    for index, term in enumerate(graph.terms.terms):
        if term.kind is TermKind.MATMUL:
            m, k, n = term.args
            term_costs[index] = 2 * m * k * n
        else:
            term_costs[index] = transfer.get(term.kind, 0.0)
    return op_costs(graph, term_costs)


def run_time(text: str, transfer: dict[TermKind, float]) -> float:
    graph = expand_text(text)
    return critical_path(graph, seconds(graph, transfer)).time


def g(m: int, k: int, n: int) -> float:
    return float(2 * m * k * n)


# -- the language ------------------------------------------------------------------------------


def test_statement_overlap_sets_every_block_but_a_block_may_say_otherwise() -> None:
    text = """\
model m { layers = 2; hidden = 64; heads = 4; ffn = 256; vocab = 100 }
workload { batch = 8; seq = 16 }
devices { group x = gpu[0..1] }
layers 0..1 on x overlap { embed; attention tp=2; mlp tp=2 overlap=false; lm_head tp=2 }
"""
    program = dagc.compile_text(text, "t.dag").program
    (only,) = program.ranges
    flags = {block.kind.value: block.overlap for block in only.blocks}
    # embed never communicates, so the statement's flag skips it
    assert flags == {"embed": False, "attention": True, "mlp": False, "lm_head": True}
    assert "attention on @x tp=2 kernel=explicit mask=full overlap" in str(program)
    assert "mlp on @x tp=2\n" in str(program)


def test_without_overlap_every_step_is_on_the_compute_stream() -> None:
    graph = expand_text(PIPE.format(m=2, first="", second=""))
    assert {step.stream for step in graph.steps} == {Stream.COMPUTE}


def test_receives_stay_on_the_compute_stream() -> None:
    """recv_stage and recv_moe cost nothing and mark where compute waits for the data."""
    graph = expand_text(PINGPONG.format(layers=1, m=2, last=0, ov="overlap"))
    streams = {step.base: step.stream for step in graph.steps}
    assert streams["broadcast"] is Stream.COMM and streams["return"] is Stream.COMM
    assert streams["recv_moe"] is Stream.COMPUTE
    assert {s for base, s in streams.items() if base not in ("broadcast", "return")} == {
        Stream.COMPUTE
    }


def test_assign_streams_alone() -> None:
    """The pass moves exactly the communication of overlap blocks, nothing else changes."""
    program = dagc.compile_text(PIPE.format(m=2, first="", second="overlap"), "t.dag").program
    before = run_passes(program, until="insert-transfers")
    after = assign_streams(before)
    verify(after)
    moved = [
        (old.base, new.stream)
        for old, new in zip(before.steps(), after.steps(), strict=True)
        if old != new
    ]
    assert moved == [
        (base, Stream.COMM) for base in ("send_stage1", "all_reduce_attn", "all_reduce_mlp")
    ]
    plain = dagc.compile_text(PIPE.format(m=2, first="", second=""), "t.dag").program
    steps = run_passes(plain, until="insert-transfers")
    assert assign_streams(steps) is steps


# -- a two-stage pipeline -----------------------------------------------------------------------

PIPE = """\
model p {{ layers = 2; hidden = 64; heads = 4; ffn = 256 }}
workload {{ batch = 8; seq = 16; microbatches = {m} }}
devices {{ group x = gpu[0..1]; group y = gpu[2..3] }}
layers 0..0 on x {first} {{ attention; mlp }}
layers 1..1 on y {second} {{ attention; mlp }}
"""


def stage_time(m: int) -> float:
    """t: one layer's matmuls for one micro-batch on one GPU of tp = 2 (2 heads of 16)."""
    bm, seq, hidden, heads, d, ffn = 8 // m, 16, 64, 2, 16, 128
    tokens = bm * seq
    return (
        3 * g(tokens, hidden, heads * d)
        + g(bm * heads * seq, d, seq)
        + g(bm * heads * seq, seq, d)
        + g(tokens, heads * d, hidden)
        + g(tokens, hidden, ffn)
        + g(tokens, ffn, hidden)
    )


def pipeline_serial(m: int, t: float, s: float) -> float:
    """Without overlap stage 0 runs compute then send (t + s) per micro-batch, stage 1 waits
    (recv costs nothing) and computes (t): Σ tₛ + (m − 1)·max tₛ = m·(t + s) + t."""
    return m * (t + s) + t


def pipeline_overlapped(m: int, t: float, s: float) -> float:
    """With overlap the send runs on stage 0's communication stream: stage 0's compute
    stream goes on to the next micro-batch while the send runs. Compute 0, the sends and
    compute 1 are three chains, each running the micro-batches in order, each micro-batch
    passing through them in turn: the pipeline rule over three stages t, s, t gives
    2·t + s + (m − 1)·max(t, s)."""
    return 2 * t + s + (m - 1) * max(t, s)


@pytest.mark.parametrize("m", [1, 2, 4, 8])
@pytest.mark.parametrize("ratio", [0.0, 0.25, 1.0, 3.0])
def test_pipeline_send_overlaps_the_next_microbatch(m: int, ratio: float) -> None:
    t = stage_time(m)
    s = ratio * t
    p2p = {TermKind.P2P: s}
    serial = run_time(PIPE.format(m=m, first="", second=""), p2p)
    overlapped = run_time(PIPE.format(m=m, first="", second="overlap"), p2p)
    assert serial == pytest.approx(pipeline_serial(m, t, s), rel=1e-12)
    assert overlapped == pytest.approx(pipeline_overlapped(m, t, s), rel=1e-12)


def test_pipeline_overlap_belongs_to_the_block_the_transfer_reaches() -> None:
    # `overlap` on stage 0 moves its all-reduces (free here), not the send into stage 1.
    m, t = 4, stage_time(4)
    p2p = {TermKind.P2P: t}
    time = run_time(PIPE.format(m=m, first="overlap", second=""), p2p)
    assert time == pytest.approx(pipeline_serial(m, t, t), rel=1e-12)


def mlp_time(m: int) -> float:
    """t₂: the mlp part of stage_time (the products after the attention's all-reduce)."""
    tokens = 8 // m * 16
    return g(tokens, 64, 128) + g(tokens, 128, 64)


def test_pipeline_statement_overlap_sets_every_block() -> None:
    """`overlap` on the statement also moves stage 0's all-reduces to its communication
    stream, where they queue in program order behind the sends: all_reduce_attn of
    micro-batch j waits for send j − 1. With s ≥ t₁ (the attention part, t₁ = t − t₂), the
    attention products of j run during send j − 1, then j's all-reduce, its mlp (t₂) and
    its send (s): send j ends at t + s + j·(t₂ + s). Stage 1 (period t ≤ t₂ + s) computes the
    last micro-batch after it: 2·t + s + (m − 1)·(t₂ + s), between the serial time and the
    time with only the send overlapped."""
    text = """\
model p { layers = 2; hidden = 64; heads = 4; ffn = 256 }
workload { batch = 8; seq = 16; microbatches = 4 }
devices { group x = gpu[0..1]; group y = gpu[2..3] }
layers 0..1 on x, y pp=2 overlap { attention; mlp }
"""
    m, t, t2 = 4, stage_time(4), mlp_time(4)
    s = 2 * t
    assert s >= t - t2
    time = run_time(text, {TermKind.P2P: s})
    assert time == pytest.approx(2 * t + s + (m - 1) * (t2 + s), rel=1e-12)
    assert pipeline_overlapped(m, t, s) < time < pipeline_serial(m, t, s)
    graph = expand_text(text)
    comm = {step.base for step in graph.steps if step.stream is Stream.COMM}
    assert comm == {"all_reduce_attn", "all_reduce_mlp", "send_stage1"}


def test_all_reduce_overlap_gains_nothing_within_a_stage() -> None:
    """An overlapped all-reduce runs on the communication stream, but the compute after it
    (res1, res2) needs its result and the next micro-batch comes after the whole current one
    in program order: each micro-batch still waits for both all-reduces, m·(t + 2·r)."""
    text = """\
model p {{ layers = 1; hidden = 64; heads = 4; ffn = 256 }}
workload {{ batch = 8; seq = 16; microbatches = 4 }}
devices {{ group x = gpu[0..1] }}
layers 0..0 on x {ov} {{ attention; mlp }}
"""
    t, r = stage_time(4), 1000.0
    for ov in ("", "overlap"):
        time = run_time(text.format(ov=ov), {TermKind.ALL_REDUCE: r})
        assert time == pytest.approx(4 * (t + 2 * r), rel=1e-12)


# -- attention/MoE separation (ping-pong) -------------------------------------------------------

PINGPONG = """\
model pp {{
  layers = {layers}; hidden = 64; heads = 4; experts = 4; top_k = 2; expert_ffn = 128
}}
workload {{ batch = 8; seq = 16; microbatches = {m} }}
devices {{ group x = gpu[0]; group y = gpu[1] }}
layers 0..{last} {{ attention on x; moe on y {ov} }}
"""


@dataclass(frozen=True)
class Separated:
    """L layers, m micro-batches, broadcast time c and return time r (other terms free)."""

    layers: int
    m: int
    c_over_b: float
    r_over_b: float

    def text(self, overlap: bool) -> str:
        ov = "overlap" if overlap else ""
        return PINGPONG.format(layers=self.layers, m=self.m, last=self.layers - 1, ov=ov)

    def units(self) -> tuple[float, float, float, float]:
        """(a, c, b, r): one unit's attention matmuls on x (4 heads of 16, tp = 1), its
        broadcast, the gate and 4 experts of tokens·2/4 tokens on y, its return."""
        bm = 8 // self.m
        tokens = bm * 16
        a = 3 * g(tokens, 64, 64) + g(bm * 4 * 16, 16, 16) * 2 + g(tokens, 64, 64)
        t_e = tokens * 2 // 4
        b = g(tokens, 64, 4) + 4 * (g(t_e, 64, 128) + g(t_e, 128, 64))
        return a, self.c_over_b * b, b, self.r_over_b * b


def separated_serial(case: Separated) -> float:
    """Without overlap the broadcast is part of x's unit (a' = a + c) and the return part of
    y's (b' = b + r): the ping-pong closed form max(a' + L·m·b', L·m·a' + b')."""
    a, c, b, r = case.units()
    n = case.layers * case.m
    return max(a + c + n * (b + r), n * (a + c) + b + r)


def separated_overlapped(case: Separated) -> float:
    """With overlap, units (l, j) pass through four chains in (l, j) order: x's compute (a),
    x's communication stream (the broadcast, c), y's compute (b; recv_moe is free), y's
    communication stream (the return, r); res2 on x (free) closes the unit and opens x's
    unit (l + 1, j). Without that feedback this is a flow shop of N = L·m identical jobs:
    S + (N − 1)·M with S = a + c + b + r and M = max(a, c, b, r). S + (N − 1)·M is also a
    lower bound (the slowest chain runs N units; the first unit reaches it and the last
    leaves it). The feedback (unit (l + 1, j) starts after (l, j) returned) never delays the
    slowest chain when one unit's whole round, S, fits in m of its slots: S ≤ m·M. With one
    layer there is no feedback at all."""
    a, c, b, r = case.units()
    n = case.layers * case.m
    longest, total = max(a, c, b, r), a + c + b + r
    assert case.layers == 1 or total <= case.m * longest, "outside the closed form's range"
    return total + (n - 1) * longest


SEPARATED_CASES = [
    Separated(layers=1, m=2, c_over_b=0.5, r_over_b=0.5),  # y's compute is the slowest
    Separated(layers=1, m=4, c_over_b=3.0, r_over_b=0.1),  # the broadcast is
    Separated(layers=3, m=4, c_over_b=0.2, r_over_b=2.0),  # the return is
    Separated(layers=2, m=4, c_over_b=2.5, r_over_b=0.3),  # the broadcast is
    Separated(layers=4, m=2, c_over_b=0.0, r_over_b=2.0),  # the return is
    Separated(layers=3, m=8, c_over_b=0.7, r_over_b=0.6),  # y's compute is
]


@pytest.mark.parametrize("case", SEPARATED_CASES, ids=repr)
def test_pingpong_with_overlapped_broadcast_and_return(case: Separated) -> None:
    _, c, _, r = case.units()
    costs = {TermKind.BROADCAST: c, TermKind.P2P: r}
    serial = run_time(case.text(overlap=False), costs)
    overlapped = run_time(case.text(overlap=True), costs)
    assert serial == pytest.approx(separated_serial(case), rel=1e-12)
    assert overlapped == pytest.approx(separated_overlapped(case), rel=1e-12)
    assert overlapped < serial or c == r == 0


# -- per-GPU busy time --------------------------------------------------------------------------


class Handmade(CostModel):
    """The tests' costs as a cost model: 2·M·K·N per product, `send` per pipeline send."""

    name = "handmade"

    def __init__(self, send: float) -> None:
        self.send = send

    def term_seconds(self, term: CostTerm) -> float:
        if term.kind is TermKind.MATMUL:
            m, k, n = term.args
            return g(m, k, n)
        return self.send if term.kind is TermKind.P2P else 0.0


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_busy_time_counts_overlapped_communication_once(ratio: float) -> None:
    """Two micro-batches, overlapped sends. Stage 0 computes [0, t] and [t, 2·t] and sends
    [t, t + s] and then, when s ≤ t, [2·t, 2·t + s]: it is busy 2·t + s, the union, not the
    2·t + 2·s its operations cost. When s > t the sends run back to back, [t, t + 2·s]: busy
    t + 2·s. Stage 1 only computes: busy 2·t. The run takes 2·t + s + max(t, s)."""
    m, t = 2, stage_time(2)
    s = ratio * t
    graph = expand_text(PIPE.format(m=m, first="", second="overlap"))
    report = analyze(graph, Handmade(s), peak_flops=1e15, memory_limit=1e12)
    total = 2 * t + s + max(t, s)
    assert report.total_s == pytest.approx(total, rel=1e-12)
    stage0 = 2 * t + s if s <= t else t + 2 * s
    busy = {figures.gpu: figures.busy_s for figures in report.gpus}
    assert busy == pytest.approx({0: stage0, 1: stage0, 2: 2 * t, 3: 2 * t}, rel=1e-12)
    for figures in report.gpus:
        assert figures.busy_s <= report.total_s
        assert figures.idle_s == pytest.approx(total - figures.busy_s, rel=1e-12, abs=1e-9)


def test_busy_time_with_a_symmetric_collapse_is_the_full_programs() -> None:
    text = PIPE.format(m=2, first="", second="overlap")
    compiled = dagc.compile_text(text, "t.dag")
    full = analyze(expand(compiled).graph, Handmade(1e5), 1e15, 1e12)
    collapsed = analyze(expand(compiled, symmetric=True).graph, Handmade(1e5), 1e15, 1e12)
    assert [f.busy_s for f in collapsed.gpus] == pytest.approx([f.busy_s for f in full.gpus])


# -- timeline -----------------------------------------------------------------------------------


def test_trace_gives_each_communication_stream_its_own_track() -> None:
    """x is gpu0, y gpu1: each sends (broadcast, return) on its communication stream, so
    each gets a second track; on every track, events never overlap."""
    text = PINGPONG.format(layers=2, m=4, last=1, ov="overlap")
    schedule, _ = build_schedule(dagc.compile_text(text, "t.dag"))
    events = trace_events(schedule)
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names == {0: "gpu0 (x)", 1: "gpu1 (y)", 2: "gpu0 comm", 3: "gpu1 comm"}
    ops = [e for e in events if e["ph"] == "X"]
    on_track = {
        tid: {e["name"].rsplit("_mb", 1)[0] for e in ops if e["tid"] == tid} for tid in names
    }
    assert on_track[2] == {"broadcast_l0", "broadcast_l1"}
    assert on_track[3] == {"return_l0", "return_l1"}
    assert "recv_moe_l0" in on_track[1] and "res2_l1_gpu0" in on_track[0]
    for tid in names:
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ops if e["tid"] == tid)
        # ts and dur are each rounded to the nanosecond: allow their two roundings
        assert all(end <= after + 2e-3 for (_, end), (after, _) in itertools.pairwise(spans))
    # the streams did overlap: some broadcast runs while gpu0 computes
    compute = [(e["ts"], e["ts"] + e["dur"]) for e in ops if e["tid"] == 0 and e["dur"] > 0]
    sends = [(e["ts"], e["ts"] + e["dur"]) for e in ops if e["tid"] == 2]
    assert any(a < d and c < b for a, b in compute for c, d in sends)


def test_gantt_has_a_second_row_for_a_gpu_with_a_communication_stream() -> None:
    text = PIPE.format(m=2, first="", second="overlap")
    schedule, _ = build_schedule(dagc.compile_text(text, "t.dag"))
    rows = gantt_rows(schedule, blocks=False)
    labels = [row.label(schedule.group_of_gpu) for row in rows]
    # stage 0 sends (gpu0, gpu1); stage 1 overlaps its all-reduces (gpu2, gpu3)
    assert labels == [
        "gpu0 (x)", "gpu0 comm", "gpu1 (x)", "gpu1 comm",
        "gpu2 (y)", "gpu2 comm", "gpu3 (y)", "gpu3 comm",
    ]  # fmt: skip
    assert {b.kind for row in rows if row.comm for b in row.bars} <= {"collective", "transfer"}
    plain = build_schedule(dagc.compile_text(PIPE.format(m=2, first="", second=""), "t.dag"))
    assert [row.comm for row in gantt_rows(plain[0], blocks=False)] == [False] * 4
