"""Pipeline schedules (dagc/passes/schedules.py, the order pass on training programs).

The per-stage unit orders are written out by hand from the schedules' definitions
(Megatron-LM's 1F1B and interleaved 1F1B, GPipe, ZB-H1 as the zero-bubble authors'
DeepSpeed schedule), never produced by dagc. The order pass is run on training step
programs whose backward is built here by hand (a mirror of the forward with BACKWARD and
WEIGHT_GRAD steps), so the schedules are tested from `Step.phase` alone.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dagc
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.analysis.formula import symbolic_longest_path
from dagc.api import CostOptions, analyze_compiled
from dagc.diagnostics import Severity
from dagc.expand import expand
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import Schedule
from dagc.ir.steps import BlockSteps, Phase, Step, StepProgram, TransferKind
from dagc.ir.terms import TermKind
from dagc.ir.verify.device import _check_acyclic, _check_program_order
from dagc.passes.manager import run_passes
from dagc.passes.microbatch import microbatch
from dagc.passes.order import order
from dagc.passes.schedules import Part, stage_order

F, B, W = Part.F, Part.B, Part.W


def _units(text: str) -> list[tuple[Part, int, int]]:
    """`F0 B0 W0 F1.1` -> units; `.k` is the local chunk (0 when left out)."""
    units = []
    for word in text.split():
        part, rest = Part(word[0]), word[1:]
        mb, _, chunk = rest.partition(".")
        units.append((part, int(mb), int(chunk or 0)))
    return units


# -- the schedules as pure functions ------------------------------------------------------


def test_gpipe_runs_every_forward_then_every_backward_in_microbatch_order() -> None:
    for s in range(2):
        assert stage_order(Schedule.GPIPE, 2, s, 3) == _units("F0 F1 F2 B0 B1 B2")


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (0, "F0 F1 F2 B0 F3 B1 B2 B3"),  # 2 warm-up forwards, 2 pairs, 2 cool-down
        (1, "F0 F1 B0 F2 B1 F3 B2 B3"),
        (2, "F0 B0 F1 B1 F2 B2 F3 B3"),  # the last stage: no warm-up
    ],
)
def test_1f1b_warm_up_steady_cool_down(s: int, expected: str) -> None:
    assert stage_order(Schedule.ONE_F_ONE_B, 3, s, 4) == _units(expected)


def test_1f1b_with_fewer_microbatches_than_stages() -> None:
    # warm-up min(p - s - 1, m) = 2 = m: every forward, then every backward
    assert stage_order(Schedule.ONE_F_ONE_B, 4, 0, 2) == _units("F0 F1 B0 B1")
    assert stage_order(Schedule.ONE_F_ONE_B, 4, 3, 2) == _units("F0 B0 F1 B1")


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        # stage 0 defers no weight gradient: W right after each B
        (0, "F0 F1 F2 B0 W0 F3 B1 W1 B2 W2 B3 W3"),
        # stage s leaves W out of its first s forward/backward pairs
        (1, "F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3"),
        (2, "F0 B0 F1 B1 F2 B2 W0 F3 B3 W1 W2 W3"),
    ],
)
def test_zb_h1_defers_weight_gradients_into_the_cool_down(s: int, expected: str) -> None:
    assert stage_order(Schedule.ZB_H1, 3, s, 4) == _units(expected)


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        # warm-up 2·(p - s - 1) + (v - 1)·p = 4; micro-batches in rounds of p = 2 through
        # chunk 0 then chunk 1; the k-th backward is the k-th forward's entry, chunk reversed
        (0, "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0"),
        (1, "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0"),
    ],
)
def test_interleaved_megatron_order(s: int, expected: str) -> None:
    assert stage_order(Schedule.INTERLEAVED, 2, s, 4, 2) == _units(expected)


def test_interleaved_with_one_chunk_is_1f1b() -> None:
    for s in range(3):
        assert stage_order(Schedule.INTERLEAVED, 3, s, 5) == stage_order(
            Schedule.ONE_F_ONE_B, 3, s, 5
        )


def test_gpipe_with_chunks_runs_chunk_by_chunk() -> None:
    assert stage_order(Schedule.GPIPE, 2, 0, 2, 2) == _units(
        "F0.0 F1.0 F0.1 F1.1 B0.1 B1.1 B0.0 B1.0"
    )


def _runs_to_the_end(schedule: Schedule, p: int, m: int, v: int) -> bool:
    """Whether the stages' orders finish, each unit waiting for the units it needs."""
    orders = [stage_order(schedule, p, s, m, v) for s in range(p)]
    chunks = p * v
    done: set[tuple[Part, int, int]] = set()
    position = [0] * p

    def ready(s: int, unit: tuple[Part, int, int]) -> bool:
        part, j, k = unit
        c = s + k * p  # the global chunk
        if part is F:
            return c == 0 or (F, j, c - 1) in done
        if part is B:
            return (F, j, c) in done and (c == chunks - 1 or (B, j, c + 1) in done)
        return (B, j, c) in done

    while any(position[s] < len(orders[s]) for s in range(p)):
        moved = False
        for s in range(p):
            if position[s] < len(orders[s]) and ready(s, orders[s][position[s]]):
                part, j, k = orders[s][position[s]]
                done.add((part, j, s + k * p))
                position[s] += 1
                moved = True
        if not moved:
            return False
    return True


@pytest.mark.parametrize("schedule", list(Schedule))
def test_every_schedule_runs_each_unit_once_and_never_deadlocks(schedule: Schedule) -> None:
    for p, v, m in itertools.product(range(1, 6), range(1, 4), range(1, 11)):
        for s in range(p):
            units = stage_order(schedule, p, s, m, v)
            expected = {(part, j, k) for part in (F, B) for j in range(m) for k in range(v)}
            if schedule is Schedule.ZB_H1 and v == 1:
                expected |= {(W, j, 0) for j in range(m)}
            assert len(units) == len(expected) and set(units) == expected, (p, s, m, v)
        assert _runs_to_the_end(schedule, p, m, v), (schedule, p, m, v)


# -- the order pass on training programs --------------------------------------------------

FILE = """
model m {{ layers = {layers}; hidden = 64; heads = 4; ffn = 128 }}
workload {{ batch = {batch}; seq = 16; microbatches = {m} }}
devices {{ {groups} }}
training {{ schedule = {schedule}{extra} }}
layers 0..{last} on {names} pp={p} {{ attention tp=2; mlp tp=2 }}
"""


def _file(schedule: str, p: int, m: int, *, v: int = 1, layers: int = 0) -> str:
    layers = layers or 2 * p * v
    names = [f"s{i}" for i in range(p)]
    groups = "; ".join(f"group {n} = gpu[{2 * i}..{2 * i + 1}]" for i, n in enumerate(names))
    return FILE.format(
        layers=layers,
        batch=2 * m,
        m=m,
        groups=groups,
        schedule=schedule,
        extra=f"; virtual_stages = {v}" if v > 1 else "",
        last=layers - 1,
        names=", ".join(names),
        p=p,
    )


def _with_hand_backward(steps: StepProgram) -> StepProgram:
    """The forward's blocks, then a mirror backward: each block reversed, each step a
    BACKWARD copy, each matmul step also a WEIGHT_GRAD copy; stage transfers reversed
    (the gradient's send on the receiving side of the forward's)."""
    backward: list[BlockSteps] = []
    previous = None
    for block in reversed(steps.blocks):
        new_steps: list[Step] = []
        transfer = block.kind is TransferKind.TRANSFER
        # a transfer's send stays first; other blocks run their steps backwards
        for step in block.steps if transfer else reversed(block.steps):
            if transfer:
                # send_stage on the senders <-> recv_stage on the receivers
                gpus = block.gpus if step.base.startswith("send") else block.input_gpus
                step = replace(step, gpus=gpus)
            grad = tuple(replace(v, name=f"d_{v.name}") for v in step.writes)
            reads = (previous,) if previous is not None else ()
            new_steps.append(
                replace(
                    step, base=step.base + "_bwd", phase=Phase.BACKWARD, reads=reads, writes=grad
                )
            )
            previous = grad[0]
            if not step.joint and step.terms[0].kind is TermKind.MATMUL:
                wgrad = tuple(replace(v, name=f"w_{v.name}") for v in step.writes)
                new_steps.append(
                    replace(
                        step,
                        base=step.base + "_wgrad",
                        phase=Phase.WEIGHT_GRAD,
                        reads=(*step.writes, previous),
                        writes=wgrad,
                    )
                )
        backward.append(replace(block, steps=tuple(new_steps)))
    return replace(steps, blocks=(*steps.blocks, *backward))


def _graph(text: str) -> DeviceGraph:
    """The device DAG of `text` with the hand-built backward (the passes up to the
    transfers, before the backward pass and streams; the files have no `overlap`)."""
    program = dagc.compile_text(text, "t.dag").program
    steps = run_passes(program, until="insert-transfers")
    graph = order(microbatch(_with_hand_backward(steps)))
    assert isinstance(graph, DeviceGraph)
    return graph


def _lane_units(
    graph: DeviceGraph, gpu: int, *, split_w: bool = False
) -> list[tuple[Part, int, int]]:
    """The (part, micro-batch, layer) runs of GPU `gpu`'s operations, in program order
    (weight gradients counted with the backward unless `split_w`)."""
    levels = graph.levels
    assert levels is not None
    level_of = np.empty(graph.num_ops, dtype=np.int64)
    for index, level in enumerate(levels):
        level_of[level] = index
    ops = sorted(
        (op for op in range(graph.num_ops) if gpu in graph.gpus_of(op)),
        key=lambda op: level_of[op],
    )
    units: list[tuple[Part, int, int]] = []
    for op in ops:
        step = graph.step_of(op)
        if step.phase is Phase.ITERATION:
            continue
        part = {Phase.FORWARD: F, Phase.RECOMPUTE: B, Phase.BACKWARD: B, Phase.WEIGHT_GRAD: W}[
            step.phase
        ]
        part = B if part is W and not split_w else part
        key = (part, graph.split_id(op)[0], -1)
        if not units or units[-1][:2] != key[:2]:
            units.append(key)
        if units[-1][2] < 0 and not step.joint:  # the unit's first computation's layer
            units[-1] = (*units[-1][:2], step.layer)
    return units


def _parts(units: list[tuple[Part, int, int]]) -> list[tuple[Part, int]]:
    return [(part, j) for part, j, _ in units]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_each_stage_runs_its_schedule(schedule: str) -> None:
    p, m = 3, 4
    graph = _graph(_file(schedule, p, m))
    for s in range(p):
        expected = [(part, j) for part, j, _ in stage_order(Schedule(schedule), p, s, m)]
        # W runs with its B unless deferred: merge it into the B run
        assert _parts(_lane_units(graph, 2 * s)) == expected


def test_zb_h1_places_the_weight_gradients_as_scheduled() -> None:
    p, m = 3, 4
    graph = _graph(_file("zb_h1", p, m))
    for s in range(p):
        expected = [(part, j) for part, j, _ in stage_order(Schedule.ZB_H1, p, s, m)]
        assert _parts(_lane_units(graph, 2 * s, split_w=True)) == expected


def test_interleaved_stage_runs_its_chunks_in_megatron_order() -> None:
    p, m, v = 2, 4, 2
    graph = _graph(_file("interleaved", p, m, v=v))
    for s in range(p):
        # chunk c = s + k·p holds layers 2c, 2c + 1 (8 layers in 4 chunks)
        expected = [
            (part, j, 2 * (s + k * p) + (1 if part is B else 0))
            for part, j, k in stage_order(Schedule.INTERLEAVED, p, s, m, v)
        ]
        found = _lane_units(graph, 2 * s)
        # a forward unit starts at the chunk's first layer, a backward one at its last
        assert found == expected


@pytest.mark.parametrize(
    ("schedule", "p", "m", "v"),
    [("gpipe", 2, 3, 1), ("1f1b", 3, 5, 1), ("zb_h1", 4, 6, 1), ("interleaved", 2, 4, 2)],
)
def test_training_dags_are_acyclic_with_one_chain_per_lane(
    schedule: str, p: int, m: int, v: int
) -> None:
    graph = _graph(_file(schedule, p, m, v=v))
    levels = _check_acyclic(graph)
    _check_program_order(graph, levels)


# -- the `pp=` sugar with virtual stages --------------------------------------------------


def test_virtual_stages_cut_the_layers_into_chunks_round_robin() -> None:
    text = (
        _file("interleaved", 2, 4, v=2)
        .replace("{ attention", "{ embed; attention")
        .replace("mlp tp=2 }", "mlp tp=2; lm_head tp=2 }")
    )
    text = text.replace("ffn = 128", "ffn = 128; vocab = 64")
    program = dagc.compile_text(text, "t.dag").program
    ranges = [
        (r.first, r.last, r.blocks[0].group, [b.kind.value for b in r.blocks])
        for r in program.ranges
    ]
    assert ranges == [
        (0, 1, "s0", ["embed", "attention", "mlp"]),
        (2, 3, "s1", ["attention", "mlp"]),
        (4, 5, "s0", ["attention", "mlp"]),
        (6, 7, "s1", ["attention", "mlp", "lm_head"]),
    ]


def _diagnostics(text: str) -> list[Any]:
    try:
        return list(dagc.compile_text(text, "t.dag").warnings)
    except dagc.DiagnosticError as error:
        return list(error.diagnostics)


def test_fewer_layers_than_chunks_is_an_error() -> None:
    (found,) = [
        d
        for d in _diagnostics(_file("interleaved", 2, 4, v=2, layers=3))
        if d.severity is Severity.ERROR
    ]
    assert found.severity is Severity.ERROR
    assert found.message == (
        "pp=2 with virtual_stages=2 cuts layers 0..2 into 4 chunks, but there are only 3 layers"
    )
    assert found.help == "each chunk needs at least one layer: lower virtual_stages or pp"
    assert (found.span.line, found.span.column) == (6, 26)


def test_layers_not_dividing_into_chunks_is_a_warning() -> None:
    (found,) = _diagnostics(_file("interleaved", 2, 4, v=2, layers=7))
    assert found.severity is Severity.WARNING
    assert found.message == (
        "7 layers do not split evenly into pp·virtual_stages = 4 chunks:"
        " chunks 0-2 get 2 layers, chunk 3 gets 1"
    )
    assert (found.span.line, found.span.column) == (6, 26)


def test_interleaving_needs_microbatches_in_rounds_of_pp() -> None:
    (found,) = _diagnostics(_file("interleaved", 2, 3, v=2))
    assert found.severity is Severity.ERROR
    assert found.message == (
        "the interleaved schedule runs micro-batches in rounds of pp=2,"
        " but microbatches=3 is not a multiple of 2"
    )
    assert found.help == (
        "use a multiple of 2 micro-batches (as Megatron-LM requires), or remove `virtual_stages`"
    )


# -- closed forms: equal stages, matmuls only ----------------------------------------------


def _matmul_only_time(graph: DeviceGraph) -> float:
    """The critical path with Get_Time(M, K, N) = 2·M·K·N seconds, every other term free."""
    costs = np.asarray(
        [
            2.0 * float(np.prod([int(a) for a in term.args[:3]]))
            if term.kind is TermKind.MATMUL
            else 0.0
            for term in graph.terms.terms
        ]
    )
    return critical_path(graph, op_costs(graph, costs)).time


# One layer's forward products on one tp=2 rank of _file's model: T = 2 sequences × 16
# tokens = 32, H = 64, 2 heads of d = 16 per rank, ffn 128 / 2 = 64 per rank.
T, H, D, HEADS, FFN = 32, 64, 16, 2, 64
LAYER_FORWARD = (
    3 * 2 * T * H * (HEADS * D)  # q, k, v
    + 2 * 2 * (2 * HEADS * 16) * D * 16  # scores and weights·V: 2 sequences × 2 heads × S²·d
    + 2 * T * (HEADS * D) * H  # o_proj
    + 2 * 2 * T * H * FFN  # mlp_up, mlp_down
)
CHUNK_FORWARD = 2 * LAYER_FORWARD  # _file puts 2 layers in each chunk
# the hand-built backward: every product's input gradient (B) and weight gradient (W)
# cost the forward product's time each
T_F, T_B_INPUT, T_W = CHUNK_FORWARD, CHUNK_FORWARD, CHUNK_FORWARD
T_B = T_B_INPUT + T_W


@pytest.mark.parametrize(("p", "m"), [(2, 4), (4, 8), (3, 5)])
def test_1f1b_and_gpipe_take_m_plus_p_minus_1_rounds(p: int, m: int) -> None:
    expected = (m + p - 1) * (T_F + T_B)
    assert _matmul_only_time(_graph(_file("1f1b", p, m))) == expected
    assert _matmul_only_time(_graph(_file("gpipe", p, m))) == expected


@pytest.mark.parametrize(("p", "m", "v"), [(2, 4, 2), (4, 8, 2), (2, 4, 3)])
def test_interleaved_bubble_is_1f1b_s_over_v(p: int, m: int, v: int) -> None:
    per_stage = v * (T_F + T_B)  # a stage's work per micro-batch: v chunks
    expected = m * per_stage + (p - 1) * per_stage / v
    assert _matmul_only_time(_graph(_file("interleaved", p, m, v=v))) == expected


@pytest.mark.parametrize(("p", "m"), [(2, 4), (4, 8), (3, 6)])
def test_zb_h1_bubble_is_p_minus_1_times_f_plus_b_minus_w(p: int, m: int) -> None:
    # Qi et al.'s (p − 1)·(T_F + T_B − T_W), T_B the input gradients only
    expected = m * (T_F + T_B) + (p - 1) * (T_F + T_B_INPUT - T_W)
    assert _matmul_only_time(_graph(_file("zb_h1", p, m))) == expected


def test_1f1b_formula_counts_m_plus_p_minus_1_rounds_of_a_stage() -> None:
    p, m = 3, 5
    path = symbolic_longest_path(
        _graph(_file("1f1b", p, m)), include=lambda term: term.kind is TermKind.MATMUL
    )
    (only,) = path.sums  # one path dominates: no max(...)
    counts = {path.terms[t].args[:3]: c for t, c in only.counts.items()}
    # a stage's products per micro-batch, each with its B and W copy (× 3), 2 layers
    per_stage = {
        (T, H, HEADS * D): 3 * 3 * 2,  # q, k, v
        (2 * HEADS * 16, D, 16): 2 * 3 * 2,  # scores, weights·V
        (T, HEADS * D, H): 1 * 3 * 2,  # o_proj
        (T, H, FFN): 2 * 3 * 2,  # mlp_up, mlp_down
    }
    assert counts == {args: (m + p - 1) * c for args, c in per_stage.items()}


def test_iteration_steps_run_after_every_microbatch_on_their_lane() -> None:
    program = dagc.compile_text(_file("1f1b", 2, 3), "t.dag").program
    steps = _with_hand_backward(run_passes(program, until="insert-transfers"))
    last = steps.blocks[-1]
    update = replace(
        last.steps[0],
        base="optimizer",
        gpus=(0, 1),
        terms=last.steps[0].terms[:1] * 2,
        phase=Phase.ITERATION,
        reads=(),
        writes=(replace(last.steps[0].writes[0], name="updated"),),
    )
    steps = replace(steps, blocks=(*steps.blocks, replace(last, steps=(update,))))
    graph = order(microbatch(steps))
    levels = _check_acyclic(graph)
    _check_program_order(graph, levels)
    level_of = np.empty(graph.num_ops, dtype=np.int64)
    for index, level in enumerate(levels):
        level_of[level] = index
    on_gpu0 = sorted(
        (op for op in range(graph.num_ops) if 0 in graph.gpus_of(op)), key=level_of.__getitem__
    )
    phases = [graph.step_of(op).phase for op in on_gpu0]
    # once per iteration (the device DAG's tail), after every micro-batch's work
    assert phases[-1:] == [Phase.ITERATION]
    assert Phase.ITERATION not in phases[:-1]


# -- closed forms with the backward pass (`--matmul-only`: communication, elementwise free) --

# One layer's products on one rank, split as the backward prices them: weight products
# (q, k, v, o_proj, mlp_up, mlp_down) get an input gradient (B) and a weight gradient (W)
# of the same FLOPs; the attention core's two activation products (scores, weights·V) get
# two input-gradient products each and no W.
LAYER_WEIGHTS = 2 * (3 * T * H * (HEADS * D) + T * (HEADS * D) * H + 2 * T * H * FFN)
LAYER_CORE = LAYER_FORWARD - LAYER_WEIGHTS
REAL_T_F = 2 * LAYER_FORWARD  # 2 layers per chunk
REAL_T_B_INPUT = 2 * (LAYER_WEIGHTS + 2 * LAYER_CORE)
REAL_T_W = 2 * LAYER_WEIGHTS
REAL_T_B = REAL_T_B_INPUT + REAL_T_W


def _real(schedule: str, p: int, m: int, v: int = 1) -> float:
    """The matmul-only iteration time of `_file`'s program with dagc's backward pass."""
    graph = expand(dagc.compile_text(_file(schedule, p, m, v=v), "t.dag")).graph
    levels = _check_acyclic(graph)
    _check_program_order(graph, levels)
    return _matmul_only_time(graph)


def test_the_backward_costs_twice_the_forward() -> None:
    assert REAL_T_B == 2 * REAL_T_F


@pytest.mark.parametrize(("p", "m"), [(2, 4), (4, 8)])
def test_1f1b_and_gpipe_closed_form_with_the_backward_pass(p: int, m: int) -> None:
    expected = (m + p - 1) * (REAL_T_F + REAL_T_B)
    assert _real("1f1b", p, m) == expected
    assert _real("gpipe", p, m) == expected


@pytest.mark.parametrize(("p", "m", "v"), [(4, 8, 2), (2, 4, 3)])
def test_interleaved_closed_form_with_the_backward_pass(p: int, m: int, v: int) -> None:
    per_stage = v * (REAL_T_F + REAL_T_B)
    assert _real("interleaved", p, m, v) == m * per_stage + (p - 1) * per_stage / v


@pytest.mark.parametrize(("p", "m"), [(2, 4), (3, 6), (4, 8)])
def test_zb_h1_closed_form_with_the_backward_pass(p: int, m: int) -> None:
    # B (input gradients) and W (weight gradients) differ here: the attention core has no W
    assert REAL_T_B_INPUT != REAL_T_W
    expected = m * (REAL_T_F + REAL_T_B) + (p - 1) * (REAL_T_F + REAL_T_B_INPUT - REAL_T_W)
    assert _real("zb_h1", p, m) == expected


def test_1f1b_formula_with_the_backward_pass_has_m_plus_p_minus_1_rounds() -> None:
    p, m = 3, 5
    text = _file("1f1b", p, m)
    graph = expand(dagc.compile_text(text, "t.dag")).graph
    path = symbolic_longest_path(graph, include=lambda term: term.kind is TermKind.MATMUL)
    (only,) = path.sums
    total = sum(
        c * 2 * int(np.prod([int(a) for a in path.terms[t].args[:3]]))
        for t, c in only.counts.items()
    )
    assert total == (m + p - 1) * (REAL_T_F + REAL_T_B)
    # every term's count is a multiple of m + p - 1: the path crosses m + p - 1 rounds
    assert all(c % (m + p - 1) == 0 for c in only.counts.values())


def test_separated_layers_run_the_schedule_as_one_stage() -> None:
    """Attention on one group, its moe on another: no ping-pong in training, one stage."""
    text = """
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24 }
workload { batch = 6; seq = 8; microbatches = 3 }
devices { group attn = gpu[0..1]; group moe = gpu[2..3] }
training { schedule = 1f1b }
layers 0..1 { attention on attn tp=2; moe on moe ep=2 }
"""
    graph = expand(dagc.compile_text(text, "t.dag")).graph
    levels = _check_acyclic(graph)
    _check_program_order(graph, levels)
    for gpu in (0, 2):  # p = 1: forward, backward, micro-batch by micro-batch
        assert _parts(_lane_units(graph, gpu)) == [(F, 0), (B, 0), (F, 1), (B, 1), (F, 2), (B, 2)]


@pytest.mark.parametrize(("schedule", "v"), [("1f1b", 1), ("zb_h1", 1), ("interleaved", 2)])
def test_streams_recomputation_and_sequence_parallelism_keep_one_chain_per_lane(
    schedule: str, v: int
) -> None:
    text = _file(schedule, 2, 4, v=v).replace("pp=2 {", "pp=2 overlap {")
    text = text.replace(
        f"training {{ schedule = {schedule}",
        f"training {{ recompute = full; sequence_parallel = true; schedule = {schedule}",
    )
    graph = expand(dagc.compile_text(text, "t.dag")).graph
    assert any(step.phase is Phase.RECOMPUTE for step in graph.steps)
    _check_program_order(graph, _check_acyclic(graph))


@pytest.mark.parametrize(
    ("schedule", "p", "m", "v"), [("1f1b", 4, 8, 1), ("zb_h1", 4, 8, 1), ("interleaved", 4, 8, 2)]
)
def test_closed_forms_through_analyze_with_the_flops_plugin(
    schedule: str, p: int, m: int, v: int
) -> None:
    """`dagc analyze --cost-plugin examples/plugins/flops_only.py --matmul-only`: a product
    costs 2·M·K·N / 1e15 s, everything else nothing."""
    plugin = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "flops_only.py"
    compiled = dagc.compile_text(_file(schedule, p, m, v=v), "t.dag")
    total = analyze_compiled(compiled, CostOptions(plugin=plugin, matmul_only=True)).analysis
    per_stage = v * (REAL_T_F + REAL_T_B)
    bubble = {
        "1f1b": (p - 1) * per_stage,
        "zb_h1": (p - 1) * (REAL_T_F + REAL_T_B_INPUT - REAL_T_W),
        "interleaved": (p - 1) * per_stage / v,
    }[schedule]
    assert total.total_s == pytest.approx((m * per_stage + bubble) / 1e15, rel=1e-12)
