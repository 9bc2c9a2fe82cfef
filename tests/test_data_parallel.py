"""Data parallelism, ZeRO and the optimizer step (the data-parallel pass), and the device
DAG's once-per-iteration tail.

Expected numbers are hand arithmetic from the model's sizes (docs/semantics.md, "The
training iteration"), never dagc's own helpers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import dagc
from dagc.analysis.costs import CostModel
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.expand import expand
from dagc.ir.device import DATA_EDGE, DeviceGraph
from dagc.ir.steps import BlockSteps, IterationKind, Phase, Step, StepProgram, Stream
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.values import Dim, Value
from dagc.ir.verify import VerificationError, verify
from dagc.passes.data_parallel import data_parallel
from dagc.passes.manager import run_passes
from dagc.passes.microbatch import microbatch
from dagc.passes.order import order
from tests.helpers import example_files

H, HEADS, FFN = 1024, 8, 4096  # d = H / heads = 128; a plain (non-gated) MLP

TEXT = """
model tiny {{
  layers = 2
  hidden = 1024
  heads = 8
  ffn = 4096
}}
workload {{
  batch = {batch}
  seq = 512
  dtype = bf16
  microbatches = {m}
}}
training {{
{training}
}}
devices {{
  gpu = h100
  group g0 = gpu[0..{last}]
}}
layers 0..1 on g0 {{
  attention tp={tp}
  mlp tp={tp}
}}
"""


def text(training: str, *, m: int = 2, tp: int = 2, dp: int = 4) -> str:
    return TEXT.format(batch=dp * m * 2, m=m, training=training, last=tp - 1, tp=tp)


def graph_of(source: str, **kwargs: Any) -> DeviceGraph:
    return expand(dagc.compile_text(source, "t.dag"), **kwargs).graph


def steps_of(source: str) -> StepProgram:
    result = run_passes(dagc.compile_text(source, "t.dag").program, until="assign-streams")
    assert isinstance(result, StepProgram)
    return result


def dp_steps(steps: StepProgram) -> list[Step]:
    return [s for b in steps.blocks if isinstance(b.kind, IterationKind) for s in b.steps]


# A TP2 dense layer on one GPU: q, k, v and o are H x H/2 each (2·H² elements), the MLP's
# up and down H x ffn/2 each (H·ffn): 6,291,456 parameters, 12,582,912 bytes in bf16.
LAYER_PARAMS = 2 * H * H + H * FFN
LAYER_BYTES = 2 * LAYER_PARAMS


def test_layer_parameters_by_hand() -> None:
    assert LAYER_PARAMS == 6_291_456


def test_zero0_all_reduces_each_layers_gradients_then_adam() -> None:
    steps = steps_of(text("  dp = 4"))
    reductions = [s for s in dp_steps(steps) if s.base == "grad_all_reduce"]
    assert [s.layer for s in reductions] == [1, 0]  # last layer first, as the backward ends
    for step in reductions:
        assert step.gpus == (0, 1)
        assert step.phase is Phase.ITERATION and not step.joint
        assert all(t == CostTerm(TermKind.ALL_REDUCE, (LAYER_BYTES, 4)) for t in step.terms)
        assert step.stream is Stream.COMPUTE
    (optimizer,) = [s for s in dp_steps(steps) if s.base == "optimizer"]
    assert optimizer.terms == (CostTerm(TermKind.OPTIMIZER, (2 * LAYER_PARAMS,)),) * 2
    assert not [s for s in dp_steps(steps) if "gather" in s.base]


def test_zero1_reduce_scatters_and_gathers_the_shards() -> None:
    steps = steps_of(text("  dp = 4\n  zero = 1"))
    bases = [s.base for s in dp_steps(steps)]
    assert bases == ["grad_reduce_scatter", "grad_reduce_scatter", "optimizer", "param_all_gather"]
    scatter, _, optimizer, gather = dp_steps(steps)
    assert scatter.terms[0] == CostTerm(TermKind.REDUCE_SCATTER, (LAYER_BYTES // 4, 4))
    assert optimizer.terms[0] == CostTerm(TermKind.OPTIMIZER, (2 * LAYER_PARAMS // 4,))
    assert gather.terms[0] == CostTerm(TermKind.ALL_GATHER, (2 * LAYER_BYTES // 4, 4))


def test_zero3_gathers_each_layer_per_microbatch() -> None:
    source = text("  dp = 4\n  zero = 3", m=2)
    steps = steps_of(source)
    gathers = [b for b in steps.blocks if b.kind is IterationKind.PARAM_GATHER]
    # before each layer's forward (no backward block in this program yet: see the
    # backward tests for the gather before the backward)
    assert [(b.layer, b.steps[0].base) for b in gathers][:2] == [
        (0, "param_all_gather"),
        (1, "param_all_gather"),
    ]
    for block in gathers:
        assert block.steps[0].phase is not Phase.ITERATION
        assert block.steps[0].terms[0] == CostTerm(TermKind.ALL_GATHER, (LAYER_BYTES // 4, 4))
    bases = [s.base for s in dp_steps(steps) if s.phase is Phase.ITERATION]
    assert bases == ["grad_reduce_scatter", "grad_reduce_scatter", "optimizer"]
    graph = graph_of(source)
    names = {graph.name(op) for op in range(graph.num_ops)}
    assert {"param_all_gather_l0_gpu0_mb0", "param_all_gather_l0_gpu0_mb1"} <= names
    verify(graph)


def test_dp1_has_only_the_optimizer() -> None:
    steps = steps_of(text("  dp = 1", dp=1))
    assert [s.base for s in dp_steps(steps)] == ["optimizer"]
    assert dp_steps(steps)[0].terms[0].args == (2 * LAYER_PARAMS,)


def test_replicas_on_other_nodes_make_the_collective_inter_node() -> None:
    # 2 GPUs per replica, 8 replicas: GPU 0's copies are 0, 2, ..., 14, on 2 nodes of 8
    steps = steps_of(text("  dp = 8", dp=8))
    reduction = next(s for s in dp_steps(steps) if s.base == "grad_all_reduce")
    assert reduction.terms[0] == CostTerm(TermKind.ALL_REDUCE, (LAYER_BYTES, 8), nodes=2)


def test_tail_operations_follow_every_microbatch() -> None:
    m = 3
    graph = graph_of(text("  dp = 4", m=m))
    per_mb_steps = [s for s in graph.steps if s.phase is not Phase.ITERATION]
    width = sum(s.width for s in per_mb_steps)
    assert graph.template_size == width
    assert graph.tail_size == 2 * 2 + 2  # 2 layers x 2 GPUs, the optimizer on 2 GPUs
    assert graph.num_ops == m * width + graph.tail_size
    names = [graph.name(op) for op in range(graph.num_ops)]
    tail = names[m * width :]
    assert tail[0] == "grad_all_reduce_l1_gpu0" and "_mb" not in "".join(tail)
    first_tail = graph.tail_start
    assert graph.microbatch_of(first_tail) is None
    assert graph.microbatch_of(first_tail - 1) == m - 1
    assert graph.template_of(first_tail) == width
    # the reduction of layer 1 on gpu 0 reads layer 1's weight gradients of every
    # micro-batch (the forward's weight products while the program has no backward)
    backward = any(s.phase is Phase.WEIGHT_GRAD for s in graph.steps)
    suffix = "_wgrad" if backward else ""
    op = names.index("grad_all_reduce_l1_gpu0")
    data = graph.edge_kind == DATA_EDGE
    sources = {names[s] for s in graph.src[data & (graph.dst == op)].tolist()}
    for j in range(m):
        assert f"o_proj{suffix}_l1_gpu0_mb{j}" in sources
        assert f"mlp_down{suffix}_l1_gpu0_mb{j}" in sources
    assert not any("_l0_" in name for name in sources)
    verify(graph)


def test_collapsed_training_graph_verifies() -> None:
    verify(graph_of(text("  dp = 4\n  zero = 1", m=2), symmetric=True))


class Handmade(CostModel):
    """Every product costs 1 s, a gradient all-reduce `reduce`, Adam `adam`; nothing else
    costs anything."""

    name = "handmade"

    def __init__(self, reduce: float, adam: float) -> None:
        self.reduce, self.adam = reduce, adam

    def term_seconds(self, term: CostTerm) -> float:
        if term.kind is TermKind.MATMUL:
            return 1.0
        if term.kind is TermKind.ALL_REDUCE:  # tp = 1: only the gradients' all-reduces
            return self.reduce
        return self.adam if term.kind is TermKind.OPTIMIZER else 0.0


def _with_weight_gradients(steps: StepProgram) -> StepProgram:
    """A stand-in backward: per layer, last first, one weight-gradient product (1 s)."""
    blocks = list(steps.blocks)
    for layer in (1, 0):
        block = next(b for b in reversed(steps.blocks) if b.layer == layer)
        reads = block.steps[-1].writes
        gpu = block.gpus
        wgrad = Value(f"wgrad_l{layer}", (Dim("params", 4),), "bf16", gpu)
        step = Step(
            "wgrad",
            layer,
            gpu,
            (CostTerm(TermKind.MATMUL, (2, 2, 2)),) * len(gpu),
            reads=reads,
            writes=(wgrad,),
            phase=Phase.WEIGHT_GRAD,
        )
        blocks.append(replace(block, steps=(step,)))
    return replace(steps, blocks=tuple(blocks))


def _iteration_seconds(overlap: bool, reduce: float, adam: float) -> float:
    training = "  dp = 4" + ("\n  grad_overlap = true" if overlap else "")
    program = dagc.compile_text(text(training, m=1, tp=1), "t.dag").program
    front = run_passes(program, until="insert-transfers")
    graph = order(microbatch(data_parallel(_with_weight_gradients(front))))
    model = Handmade(reduce, adam)
    return critical_path(graph, op_costs(graph, model.term_costs(graph.terms.terms))).time


@pytest.mark.parametrize("reduce", [0.5, 1.0, 3.0])
def test_grad_overlap_hides_reductions_behind_the_backward(reduce: float) -> None:
    """One GPU, two layers of 8 products each (q, k, v, scores, weights·V, o, up, down):
    forward F = 16 s, then the weight gradients of layer 1, then of layer 0 (1 s each).
    Without overlap: F + 2 + 2·r + a. With it, layer 1's reduction runs on the
    communication stream during layer 0's weight gradient: F + 1 + max(1, r) + r + a."""
    adam = 0.25
    forward = 16.0
    assert _iteration_seconds(False, reduce, adam) == pytest.approx(forward + 2 + 2 * reduce + adam)
    assert _iteration_seconds(True, reduce, adam) == pytest.approx(
        forward + 1 + max(1.0, reduce) + reduce + adam
    )


def test_grad_overlap_puts_the_reductions_on_the_comm_stream() -> None:
    steps = steps_of(text("  dp = 4\n  grad_overlap = true"))
    for step in dp_steps(steps):
        want = Stream.COMM if step.base.startswith("grad_") else Stream.COMPUTE
        assert step.stream is want


def test_prefill_is_untouched() -> None:
    for path in example_files()[:3]:
        program = dagc.compile_file(path).program
        before = run_passes(program, until="insert-transfers")
        assert data_parallel(before) is before
        graph = expand(dagc.compile_file(path)).graph
        assert graph.tail_size == 0
        assert graph.num_ops == graph.template_size * graph.microbatches


def test_verifier_rejects_an_iteration_step_before_the_microbatch_steps() -> None:
    steps = data_parallel(steps_of(text("  dp = 4")))
    blocks = list(steps.blocks)
    blocks.insert(0, blocks.pop())  # the optimizer's block first
    with pytest.raises(VerificationError, match="comes after the iteration"):
        verify(replace(steps, blocks=tuple(blocks)))


def test_verifier_rejects_a_dp_collective_over_the_wrong_ranks() -> None:
    steps = steps_of(text("  dp = 4"))
    blocks = list(steps.blocks)
    index = next(i for i, b in enumerate(blocks) if b.kind is IterationKind.ITERATION)
    step = blocks[index].steps[0]
    wrong = tuple(CostTerm(TermKind.ALL_REDUCE, (t.args[0], 2)) for t in step.terms)
    blocks[index] = replace(blocks[index], steps=(replace(step, terms=wrong),))
    with pytest.raises(VerificationError, match="AllReduce_Time"):
        verify(replace(steps, blocks=tuple(blocks)))


def test_verifier_checks_allreduced_bytes_against_the_optimizer() -> None:
    steps = steps_of(text("  dp = 4"))
    blocks = list(steps.blocks)
    last = blocks[-1]
    opt = last.steps[0]
    wrong = tuple(CostTerm(TermKind.OPTIMIZER, (t.args[0] + 1,)) for t in opt.terms)
    blocks[-1] = replace(last, steps=(replace(opt, terms=wrong),))
    with pytest.raises(VerificationError, match="optimizer updates"):
        verify(replace(steps, blocks=tuple(blocks)))


def test_iteration_blocks_are_not_file_blocks() -> None:
    steps = steps_of(text("  dp = 4"))
    kinds = [b.kind for b in steps.blocks]
    assert kinds[-3:] == [IterationKind.ITERATION] * 3
    assert all(isinstance(b, BlockSteps) and b.block_kind is None for b in steps.blocks[-3:])


PIPELINE = """
model tiny {
  layers = 2
  hidden = 1024
  heads = 8
  ffn = 4096
}
workload {
  batch = 16
  seq = 512
  dtype = bf16
  microbatches = 2
}
training {
  dp = 4
  grad_overlap = true
}
devices {
  gpu = h100
  group s0 = gpu[0..1]
  group s1 = gpu[2..3]
}
layers 0..1 on s0, s1 pp=2 {
  attention tp=2
  mlp tp=2
}
"""


def test_pipeline_stages_reduce_their_own_layers_after_their_own_work() -> None:
    graph = graph_of(PIPELINE)
    names = [graph.name(op) for op in range(graph.num_ops)]
    tail = names[graph.tail_start :]
    assert tail == [
        "grad_all_reduce_l1_gpu2",
        "grad_all_reduce_l1_gpu3",
        "grad_all_reduce_l0_gpu0",
        "grad_all_reduce_l0_gpu1",
        "optimizer_gpu0",
        "optimizer_gpu1",
        "optimizer_gpu2",
        "optimizer_gpu3",
    ]
    # each optimizer runs after its GPU's last compute operation (an order edge or data)
    preds = graph.predecessors()
    optimizer = names.index("optimizer_gpu0")
    last_compute = max(
        op
        for op in range(graph.tail_start)
        if 0 in graph.gpus_of(op) and graph.step_of(op).stream is Stream.COMPUTE
    )
    assert (last_compute, 1) in preds[optimizer]
    verify(graph)


@pytest.mark.parametrize("path", [p for p in example_files() if "seed" in p.parts], ids=str)
@pytest.mark.parametrize("training", ["dp = 2", "dp = 2\n  zero = 1", "dp = 4\n  zero = 3"])
def test_examples_as_training_verify(path: Any, training: str) -> None:
    source = path.read_text() + f"\ntraining {{\n  {training}\n}}\n"
    compiled = dagc.compile_text(source, "t.dag")
    for symmetric in (False, True):
        verify(expand(compiled, symmetric=symmetric).graph)


def test_back_ends_show_the_tail_once() -> None:
    from dagc.api import build_schedule
    from dagc.backends.device_json import graph_attributes, node_record
    from dagc.backends.schedule import Filters
    from dagc.backends.timeline import gantt_rows, trace_events

    schedule, _ = build_schedule(dagc.compile_text(text("  dp = 4", m=2), "t.dag"))
    graph = schedule.graph
    events = [e for e in trace_events(schedule) if e.get("ph") == "X"]
    reductions = [e for e in events if e["name"].startswith("grad_all_reduce")]
    assert len(reductions) == 4  # 2 layers x 2 GPUs, not per micro-batch
    assert all(e["args"]["microbatch"] is None for e in reductions)
    assert gantt_rows(schedule, blocks=True) and gantt_rows(schedule, blocks=False)
    assert graph_attributes(graph)["iteration_ops"] == graph.tail_size
    assert node_record(graph, graph.tail_start)["microbatch"] is None
    # a micro-batch filter leaves the tail out; no filter keeps it
    assert graph.tail_start in schedule.select(Filters()).tolist()
    assert graph.tail_start not in schedule.select(Filters(microbatches=(1, 1))).tolist()


@pytest.mark.parametrize("view", ["device", "block", "logical"])
def test_pictures_draw_the_tail(view: str) -> None:
    from dagc.api import build_schedule
    from dagc.backends.render import build_view, dot_source
    from dagc.backends.schedule import Filters

    schedule, _ = build_schedule(dagc.compile_text(text("  dp = 4", m=2), "t.dag"))
    filters = Filters()
    source = dot_source(build_view(schedule, view, filters, schedule.select(filters)))
    if view == "device":
        assert "grad_all_reduce_l1_gpu0" in source and "grad_all_reduce_l1_gpu0_mb" not in source
    if view == "block":
        assert "iteration l1 gpu0" in source


def test_zero3_gathers_where_each_block_runs_in_a_separated_layer() -> None:
    path = next(p for p in example_files() if p.name == "ma_separation.dag")
    source = path.read_text() + "\ntraining {\n  dp = 4\n  zero = 3\n}\n"
    steps = steps_of(source)
    gathers = [b for b in steps.blocks if b.kind is IterationKind.PARAM_GATHER and b.layer == 0]
    following = [steps.blocks[steps.blocks.index(b) + 1] for b in gathers]
    # each gather runs on the GPUs of the block after it, and each GPU gathers once
    for gather, block in zip(gathers, following, strict=True):
        assert set(gather.gpus) <= {g for s in block.steps for g in s.gpus}
        assert gather.excursion == block.excursion
    for forward in (True, False):  # once in the forward, once in the backward (if any)
        gathered = [
            g for b in gathers if (b.steps[0].phase is Phase.FORWARD) == forward for g in b.gpus
        ]
        assert len(gathered) == len(set(gathered))


# -- with the backward pass ------------------------------------------------------------------


def test_reductions_read_exactly_the_layers_weight_gradients() -> None:
    steps = steps_of(text("  dp = 4"))
    for reduction in [s for s in dp_steps(steps) if s.base == "grad_all_reduce"]:
        wgrads = [
            s for s in steps.steps() if s.phase is Phase.WEIGHT_GRAD and s.layer == reduction.layer
        ]
        assert wgrads  # the backward's wgrad steps of the layer
        assert set(reduction.reads) == {v for s in wgrads for v in s.writes}


def test_zero3_gathers_again_before_each_layers_backward() -> None:
    steps = steps_of(text("  dp = 4\n  zero = 3"))
    blocks = list(steps.blocks)
    for layer in (0, 1):
        gather = next(
            i
            for i, b in enumerate(blocks)
            if b.kind is IterationKind.PARAM_GATHER
            and b.layer == layer
            and b.steps[0].base == "param_all_gather_bwd"
        )
        after = blocks[gather + 1]
        first_backward = next(
            b
            for b in blocks
            if b.layer == layer
            and not isinstance(b.kind, IterationKind)
            and any(s.phase is not Phase.FORWARD for s in b.steps)
        )
        assert after is first_backward
        assert blocks[gather].steps[0].terms[0] == CostTerm(
            TermKind.ALL_GATHER, (LAYER_BYTES // 4, 4)
        )


def test_grad_overlap_shortens_the_iteration_with_the_backward() -> None:
    """Layer 1's reduction hides behind layer 0's backward: the iteration is shorter."""
    from dagc.api import analyze_compiled

    def seconds(overlap: bool) -> float:
        training = "  dp = 4" + ("\n  grad_overlap = true" if overlap else "")
        compiled = dagc.compile_text(text(training, m=2), "t.dag")
        return analyze_compiled(compiled, symmetric=False).analysis.total_s

    plain, overlapped = seconds(False), seconds(True)
    assert overlapped < plain


@pytest.mark.parametrize("training", ["dp = 4", "dp = 4\n  zero = 1\n  grad_overlap = true"])
def test_formula_with_the_tail_is_the_critical_path(training: str) -> None:
    from dagc.analysis.formula import evaluate
    from dagc.analysis.selection import cost_model
    from dagc.api import analyze_compiled, formula_compiled

    compiled = dagc.compile_text(text(training, m=2), "t.dag")
    result = formula_compiled(compiled)
    assert result.exact
    assert "Adam_Time" in str(result.expression)
    model, _ = cost_model(compiled.program, None)
    total = analyze_compiled(compiled, symmetric=False).analysis.total_s
    assert evaluate(result.expression, model.term_seconds) == pytest.approx(total)
