"""Memory per GPU for training (dagc/analysis/memory.py; docs/training.md, "Memory").

Expected numbers are closed forms written here: parameters per GPU from the model's sizes,
12 B of optimizer state per parameter sharded by the ZeRO stage, and the liveness peak of
saved values on hand-built programs whose program order the test writes itself.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest

from dagc.analysis.analyze import Analysis
from dagc.analysis.critical_path import critical_path
from dagc.analysis.memory import (
    OPTIMIZER_BYTES_PER_PARAM,
    activation_bytes,
    estimate_memory,
    saved_activation_peaks,
    saved_values,
)
from dagc.api import CostOptions, analyze_compiled
from dagc.compiler import compile_text
from dagc.ir.device import DATA_EDGE, ORDER_EDGE, DeviceGraph
from dagc.ir.logical import BlockKind, Program
from dagc.ir.steps import BlockSteps, Phase, Step, StepProgram
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.values import Dim, Value
from dagc.passes.microbatch import microbatch
from helpers import two_stage_training

H, FFN, HEADS, SEQ = 1024, 4096, 16, 128
W = 2  # bf16


def training_file(
    *, dp: int = 2, zero: int = 0, microbatches: int = 4, batch: int = 16, extra: str = ""
) -> str:
    """Four layers on two stages of tp=2 (gpu[0..1], gpu[2..3]), a training section (the
    sizes H, FFN, HEADS, SEQ above)."""
    return two_stage_training(dp=dp, zero=zero, microbatches=microbatches, batch=batch, extra=extra)


# Weight elements per GPU: 2 layers, each q, k, v (H × H/2 each), o (H/2 × H), mlp up and
# down (H × F/2 and F/2 × H) at tp = 2.
PARAMS_PER_GPU = 2 * (3 * H * H // 2 + H // 2 * H + 2 * H * FFN // 2)


def _analysis(text: str) -> Analysis:
    return analyze_compiled(compile_text(text), CostOptions()).analysis


@pytest.mark.parametrize(("dp", "zero"), [(1, 0), (2, 0), (2, 1), (4, 1), (2, 3), (4, 3), (3, 3)])
def test_weights_gradients_optimizer_by_zero_stage(dp: int, zero: int) -> None:
    batch = 4 * dp * 2
    analysis = analyze_compiled(
        compile_text(training_file(dp=dp, zero=zero, batch=batch)), CostOptions()
    ).analysis
    shard = math.ceil(PARAMS_PER_GPU / dp)
    held = shard if zero == 3 else PARAMS_PER_GPU
    states = shard if zero >= 1 else PARAMS_PER_GPU
    for g in analysis.gpus:
        assert g.weight_bytes == held * W
        assert g.gradient_bytes == held * W
        assert g.optimizer_bytes == states * OPTIMIZER_BYTES_PER_PARAM
        assert g.memory_bytes == (
            g.weight_bytes + g.gradient_bytes + g.optimizer_bytes + g.activation_bytes
        )


def test_zero0_optimizer_is_twelve_bytes_per_parameter() -> None:
    analysis = _analysis(training_file(dp=2, zero=0))
    assert analysis.gpus[0].optimizer_bytes == 12 * PARAMS_PER_GPU


def test_prefill_memory_has_no_training_parts() -> None:
    text = training_file().replace("training {\n  dp = 2\n}", "")
    assert "training" not in text
    analysis = _analysis(text.replace("batch = 16", "batch = 8"))
    for g in analysis.gpus:
        assert (g.gradient_bytes, g.optimizer_bytes, g.saved_activation_bytes) == (0, 0, 0)
        assert g.weight_bytes == PARAMS_PER_GPU * W
        assert g.memory_bytes == g.weight_bytes + g.activation_bytes


# -- liveness on hand-built programs ----------------------------------------------------------

N = 1000  # elements of each hand-built value


def _value(name: str, gpus: tuple[int, ...] = (0,), n: int = N) -> Value:
    return Value(name, (Dim("tokens", n),), "bf16", gpus)


def _step(
    base: str, phase: Phase, reads: tuple[Value, ...], writes: tuple[Value, ...], n: int = N
) -> Step:
    return Step(
        base,
        0,
        (0,),
        (CostTerm(TermKind.ELEMENTWISE, (n,)),),
        reads=reads,
        writes=writes,
        phase=phase,
    )


def _program(microbatches: int) -> Program:
    text = training_file(dp=1, microbatches=microbatches, batch=microbatches * 2)
    return compile_text(text).program


def _toy_steps() -> tuple[Step, ...]:
    """On gpu0: f1 writes a (N), f2 reads a, writes b (2N) and c (N, read by no backward);
    b2 reads b, writes db; b1 reads a and db. Saved per micro-batch: a and b, 3N elements."""
    a, b, c = _value("a"), _value("b", n=2 * N), _value("c")
    db, da = _value("db"), _value("da")
    return (
        _step("f1", Phase.FORWARD, (), (a,)),
        _step("f2", Phase.FORWARD, (a,), (b, c)),
        _step("f3", Phase.FORWARD, (c,), (_value("y"),)),
        _step("b2", Phase.BACKWARD, (b,), (db,)),
        _step("b1", Phase.BACKWARD, (a, db), (da,)),
    )


SAVED_PER_MICROBATCH = 3 * N * W
FORWARD, BACKWARD = (0, 1, 2), (3, 4)


def _graph(order: Sequence[tuple[int, tuple[int, ...]]], microbatches: int) -> DeviceGraph:
    """The toy program with m micro-batches and gpu0's program order: (micro-batch, template
    operations) units in the order given."""
    steps = _toy_steps()
    block = BlockSteps(kind=BlockKind.MLP, layer=0, group="g0", gpus=(0,), steps=steps)
    graph = microbatch(StepProgram(_program(microbatches), (block,)))
    width = graph.template_size
    sequence = [j * width + t for j, ops in order for t in ops]
    assert sorted(sequence) == list(range(graph.num_ops))
    data = set(zip(graph.src.tolist(), graph.dst.tolist(), strict=True))
    chain = [(a, b) for a, b in itertools.pairwise(sequence) if (a, b) not in data]
    src = np.concatenate([graph.src, np.asarray([a for a, _ in chain], dtype=np.int64)])
    dst = np.concatenate([graph.dst, np.asarray([b for _, b in chain], dtype=np.int64)])
    kinds = np.concatenate(
        [np.full(len(graph.src), DATA_EDGE, np.uint8), np.full(len(chain), ORDER_EDGE, np.uint8)]
    )
    return graph.with_edges(src, dst, kinds)


def _peak(graph: DeviceGraph) -> int:
    costs = np.ones(graph.num_ops, dtype=np.float64)
    path = critical_path(graph, costs)
    return saved_activation_peaks(graph, path.start, path.finish)[0]


def test_saved_values_are_those_a_backward_reads() -> None:
    graph = _graph([(0, FORWARD + BACKWARD)], 1)
    saved = saved_values(graph)
    assert sorted(saved.names) == ["a", "b"]  # c is read only by the forward
    assert saved.per_microbatch() == {0: SAVED_PER_MICROBATCH}


def test_gpipe_order_holds_every_microbatch() -> None:
    m = 4
    order = [(j, FORWARD) for j in range(m)] + [(j, BACKWARD) for j in range(m)]
    assert _peak(_graph(order, m)) == m * SAVED_PER_MICROBATCH


def test_one_in_flight_holds_one_microbatch() -> None:
    m = 4
    order = [(j, ops) for j in range(m) for ops in (FORWARD, BACKWARD)]
    assert _peak(_graph(order, m)) == SAVED_PER_MICROBATCH


def test_two_in_flight_as_1f1b_on_the_first_of_two_stages() -> None:
    # stage 0 of p = 2: one warm-up forward, then forward/backward pairs, one cool-down
    m = 4
    order = [(0, FORWARD), (1, FORWARD), (0, BACKWARD), (2, FORWARD), (1, BACKWARD)]
    order += [(3, FORWARD), (2, BACKWARD), (3, BACKWARD)]
    assert _peak(_graph(order, m)) == 2 * SAVED_PER_MICROBATCH


def test_values_die_at_their_last_backward_reader() -> None:
    # b (2N) dies after b2, before b1 reads a: one micro-batch's backward, then the next
    # forward. With m = 2 in the order F0 b2(0) F1 b1(0) B1: after b2 of micro-batch 0 only
    # its a (N) is left when micro-batch 1's forward saves a and b (3N).
    order = [(0, FORWARD), (0, (3,)), (1, FORWARD), (0, (4,)), (1, BACKWARD)]
    assert _peak(_graph(order, 2)) == (N + 3 * N) * W


def test_estimate_adds_the_working_set() -> None:
    m = 2
    graph = _graph([(j, FORWARD) for j in range(m)] + [(j, BACKWARD) for j in range(m)], m)
    costs = np.ones(graph.num_ops, dtype=np.float64)
    path = critical_path(graph, costs)
    memory = estimate_memory(graph, path.start, path.finish).gpus[0]
    assert memory.saved_activation_bytes == m * SAVED_PER_MICROBATCH
    assert memory.working_set_bytes == 2 * N * W  # an Elem_Time(N): N read, N written
    assert memory.activation_bytes == m * SAVED_PER_MICROBATCH + 2 * N * W


def _matmul(m: int, k: int, n: int) -> CostTerm:
    return CostTerm(TermKind.MATMUL, (m, k, n))


def test_backward_products_exclude_the_weight() -> None:
    x = _value("x")
    m_, k, n = 256, 1024, 512
    forward = Step("qkv", 0, (0,), (_matmul(m_, k, n),), reads=(x,), writes=(_value("q"),))
    dgrad = Step("qkv_dgrad", 0, (0,), (_matmul(m_, n, k),), reads=(x,), writes=(_value("d"),))
    wgrad = Step("qkv_wgrad", 0, (0,), (_matmul(k, m_, n),), reads=(x,), writes=(_value("g"),))
    assert activation_bytes(forward, 0, W) == (m_ * k + m_ * n) * W  # X in, Y out
    assert activation_bytes(dgrad, 0, W) == (m_ * n + m_ * k) * W  # dY in, dX out
    assert activation_bytes(wgrad, 0, W) == (k * m_ + m_ * n) * W  # Xᵀ and dY in


# -- end to end, once the passes exist ---------------------------------------------------------

HAS_BACKWARD = importlib.util.find_spec("dagc.passes.backward") is not None


def _training_analysis(schedule: str | None, m: int = 4) -> Analysis:
    """Analysis of the two-stage file under `schedule` (None: the default, 1F1B)."""
    extra = f"  schedule = {schedule}\n" if schedule else ""
    text = training_file(dp=1, microbatches=m, batch=2 * m, extra=extra)
    return analyze_compiled(compile_text(text), CostOptions()).analysis


def _lane_order(schedule: str | None) -> list[str]:
    """gpu0's operation names in topological order."""
    graph = _training_analysis(schedule).graph
    levels = graph.levels
    assert levels is not None
    ops = [int(op) for level in levels for op in level if 0 in graph.gpus_of(int(op))]
    return [graph.name(op) for op in ops]


def _schedules_differ() -> bool:
    if not HAS_BACKWARD:
        return False
    return _lane_order("gpipe") != _lane_order(None)


def _stages_file(p: int, m: int, schedule: str) -> str:
    """p pipeline stages of one GPU each, one layer per stage, m micro-batches."""
    groups = "\n".join(f"  group s{s} = gpu[{s}]" for s in range(p))
    layers = "\n".join(f"layers {s} on s{s} {{\n  attention\n  mlp\n}}" for s in range(p))
    return f"""
model m {{
  layers = {p}
  hidden = 256
  heads = 4
  ffn = 1024
}}
workload {{
  batch = {m}
  seq = 64
  microbatches = {m}
}}
training {{
  schedule = {schedule}
}}
devices {{
{groups}
}}
{layers}
"""


@pytest.mark.skipif(not _schedules_differ(), reason="backward and schedules not merged yet")
@pytest.mark.parametrize(("p", "m"), [(2, 4), (3, 5), (4, 6)])
def test_gpipe_holds_m_and_1f1b_p_minus_s_microbatches(p: int, m: int) -> None:
    for schedule in ("gpipe", "1f1b"):
        analysis = analyze_compiled(compile_text(_stages_file(p, m, schedule)), CostOptions())
        figures = {g.gpu: g for g in analysis.analysis.gpus}
        per_microbatch = saved_values(analysis.analysis.graph).per_microbatch()
        for stage in range(p):
            in_flight = m if schedule == "gpipe" else min(p - stage, m)
            saved = figures[stage].saved_activation_bytes
            assert saved == in_flight * per_microbatch[stage], (schedule, stage)


# -- Korthikanti et al. 2022 ---------------------------------------------------------------------
# Saved activation bytes per layer against Korthikanti et al. 2022 ("Reducing Activation
# Recomputation in Large Transformer Models", arXiv:2205.05198), docs/training.md "Memory".
#
# For a GPT-like layer (hidden h, a heads, sequence s, micro-batch b, tensor parallelism t,
# 16-bit activations, MLP of 4h with GeLU) the paper's bytes per layer are
#
# - no parallelism: sbh(34 + 5as/h);
# - tensor parallelism: sbh(10 + 24/t + 5as/(ht));
# - tensor + sequence parallelism: sbh(34/t + 5as/(ht));
# - selective recomputation with tensor + sequence parallelism: 34·sbh/t (without sequence
#   parallelism: sbh(10 + 24/t));
# - full recomputation: 2sbh (the layer's input).
#
# dagc saves exactly the values its backward steps read (dagc/analysis/memory.py). Its own
# closed forms, in bytes, are written below and checked exactly; the model runs the paper's
# dropout (attention_dropout = hidden_dropout = 0.1), whose masks dagc keeps at 1 byte per
# element: the attention mask after softmax (as²b/t) and the hidden masks before the two
# residual adds (sbh each). The difference from the paper is then checked to be exactly the
# terms dagc saves differently: the pre-softmax scores dagc keeps where the paper keeps
# softmax's output (both 2as²b/t: softmax's backward reads its input in dagc, its output in
# the paper; they cancel), the attention output under selective recomputation, and the
# all-gathered products' inputs under sequence parallelism.

# The per-layer figure is the difference between the same layout with 3 and with 2 layers on
# one tensor-parallel group, so the ends of the program (the input no step writes, the loss)
# cancel.

NEEDS_BACKWARD = pytest.mark.skipif(
    not HAS_BACKWARD, reason="the backward pass (dagc.passes.backward) is not merged yet"
)
KH, KA, KS, KB = 1024, 16, 128, 2  # hidden, heads, sequence, micro-batch size
KF = 4 * KH  # the paper's MLP


def _gpt_file(layers: int, t: int, extra: str) -> str:
    return f"""
model gpt {{
  layers = {layers}
  hidden = {KH}
  heads = {KA}
  ffn = {KF}
  attention_dropout = 0.1
  hidden_dropout = 0.1
}}
workload {{
  batch = {KB}
  seq = {KS}
  microbatches = 1
}}
training {{
{extra}}}
devices {{
  group g = gpu[0..{t - 1}]
}}
layers 0..{layers - 1} on g {{
  attention tp={t}
  mlp tp={t}
}}
"""


def saved_per_layer(t: int, extra: str = "") -> int:
    """Forward-saved bytes of one layer on gpu0 (recomputed values excluded)."""
    per = []
    for layers in (2, 3):
        compiled = compile_text(_gpt_file(layers, t, extra))
        graph = analyze_compiled(compiled, CostOptions()).analysis.graph
        if "sequence_parallel" in extra and not any(
            s.base.startswith("reduce_scatter") for s in graph.steps
        ):
            pytest.skip("sequence parallelism's reduce-scatter is not built yet")
        per.append(saved_values(graph).per_microbatch(forward_only=True)[0])
    return per[1] - per[0]


SBH = KS * KB * KH
SCORES = KA * KS * KS * KB  # elements of the attention scores (all heads)


@NEEDS_BACKWARD
@pytest.mark.parametrize("t", [1, 2, 4])
def test_tensor_parallel_layer(t: int) -> None:
    # dagc, in elements: the layer's input and its copy after ln1, ln2's input and output
    # (4·sbh, replicated), q, k, v and the attention output (4·sbh/t), the MLP's up and
    # activation outputs (2·s·b·F/t), the scores and the dropped probabilities (2·a·s²·b/t);
    # in bytes: the two hidden dropout masks (2·sbh) and the attention mask (a·s²·b/t)
    masks = 2 * SBH + SCORES // t
    dagc = W * (4 * SBH + 4 * SBH // t + 2 * KS * KB * KF // t + 2 * SCORES // t) + masks
    assert saved_per_layer(t) == dagc
    # the paper: sbh(10 + 24/t + 5as/(ht)); t = 1 is its sbh(34 + 5as/h). dagc's pre-softmax
    # scores stand for the paper's softmax output (2as²b/t each): the same bytes
    paper = 10 * SBH + 24 * SBH // t + 5 * SCORES // t
    assert paper == dagc


@NEEDS_BACKWARD
def test_sequence_parallel_layer() -> None:
    t = 2
    # the norms' inputs are split over the tp ranks (sbh/t each); the products' inputs are
    # the all-gathered norm outputs (sbh each), kept whole for the weight gradients
    # the hidden dropouts run on the token shares: their masks are split too (sbh/t each)
    masks = 2 * SBH // t + SCORES // t
    dagc = (
        W * (2 * SBH // t + 2 * SBH + 4 * SBH // t + 2 * KS * KB * KF // t + 2 * SCORES // t)
        + masks
    )
    assert saved_per_layer(t, "  sequence_parallel = true\n") == dagc
    paper = 34 * SBH // t + 5 * SCORES // t
    # Megatron saves the norms' outputs split and gathers them again in the backward
    gathered = 2 * W * SBH - 2 * W * SBH // t
    assert paper - dagc == -gathered


@NEEDS_BACKWARD
def test_selective_recompute_layer() -> None:
    t = 2
    # the attention core is rerun, its dropout and weights·V included: the scores, the
    # probabilities, their mask and the attention output (o_proj's input) are not saved,
    # only q, k and v of the core's inputs; the two hidden dropout masks are (2·sbh bytes)
    dagc = W * (4 * SBH + 3 * SBH // t + 2 * KS * KB * KF // t) + 2 * SBH
    assert saved_per_layer(t, "  recompute = selective\n") == dagc
    paper = 10 * SBH + 24 * SBH // t  # sbh(10 + 24/t); 34·sbh/t with sequence parallelism
    # the attention output the paper keeps and dagc recomputes
    assert paper - dagc == W * SBH // t


@NEEDS_BACKWARD
def test_full_recompute_layer() -> None:
    t = 2
    assert saved_per_layer(t, "  recompute = full\n") == W * SBH  # the layer's input, 2sbh


def test_symmetric_collapse_keeps_every_gpus_memory() -> None:
    compiled = compile_text(training_file(dp=2, zero=1))
    full = analyze_compiled(compiled, CostOptions(), symmetric=False).analysis
    collapsed = analyze_compiled(compiled, CostOptions(), symmetric=True).analysis
    assert collapsed.graph.symmetry is not None
    assert full.gpus == collapsed.gpus
