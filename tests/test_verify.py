"""The IR verifiers: they accept every pipeline stage of every example and generated
configuration, and each invariant, broken on purpose, is reported by name.

The small program is the one of test_passes.py: 2 layers, attention on gpu 0-1 (tp=2), moe
on gpu 2-3 (ep=2), 2 micro-batches. By hand from the semantics: T = 2 sequences x 8 tokens
= 16, H = 32, 4 heads of d = 8 (2 per rank), 4 experts (2 per MoE GPU), top_k 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_expansion import DEADLOCK, Config, closed_form_flops, configurations

import dagc
from dagc.expand import expand
from dagc.ir.device import DATA_EDGE, ORDER_EDGE, DeviceGraph
from dagc.ir.logical import Program
from dagc.ir.steps import Step, StepProgram, Stream
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.values import PARTIAL, REPLICATED, Value, split
from dagc.ir.values import Dim as ValueDim
from dagc.ir.verify import (
    VerificationError,
    expected_flops,
    verify,
    verify_device,
    verify_logical,
    verify_steps,
)
from dagc.passes import manager
from dagc.passes.manager import PIPELINE, Pass, PassOptions, run_passes
from helpers import EXAMPLES, example_files

TEXT = """
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group attn = gpu[0..1]; group moe = gpu[2..3] }
layers 0..1 { attention on attn tp=2; moe on moe ep=2 }
"""
T, H, NH, D, BM, S = 16, 32, 4, 8, 2, 8


@pytest.fixture(scope="module")
def program() -> Program:
    return dagc.compile_text(TEXT, "t.dag").program


@pytest.fixture(scope="module")
def steps(program: Program) -> StepProgram:
    result = run_passes(program, until="insert-transfers")
    assert isinstance(result, StepProgram)
    return result


@pytest.fixture(scope="module")
def graph(program: Program) -> DeviceGraph:
    result = run_passes(program)
    assert isinstance(result, DeviceGraph)
    return result


def fails(check: Callable[[], None], message: str) -> None:
    """`check` raises VerificationError whose message contains `message`."""
    with pytest.raises(VerificationError) as info:
        check()
    assert message in str(info.value)


# -- the verifiers accept what the pipeline builds ----------------------------------------------


class Spy:
    """Records what the pass manager verifies, then verifies it for real."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool | None]] = []

    def __call__(self, ir: object, *, ordered: bool = True) -> None:
        # `ordered` only means something for the device DAG
        self.seen.append((type(ir).__name__, ordered if isinstance(ir, DeviceGraph) else None))
        verify(ir, ordered=ordered)


def verified_levels(
    monkeypatch: pytest.MonkeyPatch, text: str, symmetric: bool
) -> list[tuple[str, bool | None]]:
    """Expand `text` with verification after every pass; what was verified, in order."""
    spy = Spy()
    monkeypatch.setattr(manager, "verify", spy)
    compiled = dagc.compile_text(text, "t.dag")
    expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric)
    return spy.seen


def expected_levels(symmetric: bool) -> list[tuple[str, bool | None]]:
    """The input program, then one IR per pass; program order is checked after `order`."""
    passes = [p for p in PIPELINE if symmetric or not p.optional]
    graphs = {"microbatch": ("DeviceGraph", False), "order": ("DeviceGraph", True)}
    return [("Program", None)] + [graphs.get(p.name, ("StepProgram", None)) for p in passes]


@pytest.mark.parametrize("symmetric", [False, True], ids=["full", "collapsed"])
@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_verifies_after_every_pass(
    monkeypatch: pytest.MonkeyPatch, path: Path, symmetric: bool
) -> None:
    seen = verified_levels(monkeypatch, path.read_text(encoding="utf-8"), symmetric)
    assert seen == expected_levels(symmetric)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations(), st.booleans())
def test_generated_configurations_verify_after_every_pass(c: Config, symmetric: bool) -> None:
    compiled = dagc.compile_text(c.text, "t.dag")
    expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric)
    # The verifier's FLOP target, against the generator's own closed form.
    assert expected_flops(compiled.program) == closed_form_flops(c), c.text


OVERLAPPED = """\
model m { layers = 4; hidden = 1024; heads = 16; ffn = 4096; experts = 4; top_k = 2 }
workload { batch = 8; seq = 128; microbatches = 4 }
devices { group a = gpu[0..3]; group b = gpu[4..7]; group e = gpu[8..9] }
layers 0..1 on a, b pp=2 overlap { attention; mlp }
layers 2..3 on b { attention; moe on e overlap }
"""


@pytest.mark.parametrize("symmetric", [False, True], ids=["full", "collapsed"])
def test_overlapped_streams_verify_after_every_pass(symmetric: bool) -> None:
    """With `overlap`, program order is a chain per GPU and stream, not per GPU."""
    compiled = dagc.compile_text(OVERLAPPED, "t.dag")
    graph = expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric).graph
    comm = [s for s in graph.steps if s.stream is Stream.COMM]
    assert {s.base for s in comm} >= {"all_reduce_attn", "send_stage1", "broadcast", "return"}


def test_overlapped_stream_that_lost_its_order_edge() -> None:
    """Two all-reduces of gpu 0's communication stream with nothing ordering them."""
    graph = expand(dagc.compile_text(OVERLAPPED, "t.dag")).graph
    broken = without_edge(graph, "all_reduce_attn_l0_mb0", "all_reduce_mlp_l0_mb0")
    with pytest.raises(VerificationError, match="gpu 0"):
        verify_device(broken)


def test_a_deadlock_stays_a_diagnostic_under_verification() -> None:
    compiled = dagc.compile_text(DEADLOCK, "t.dag")
    with pytest.raises(dagc.DiagnosticError) as info:
        expand(compiled, options=PassOptions(verify_each=True))
    assert "deadlocks" in info.value.diagnostics[0].message


def test_a_broken_pass_is_caught_after_it_runs(
    monkeypatch: pytest.MonkeyPatch, program: Program
) -> None:
    """A pass that puts the attention all-reduce on the MoE GPUs fails verification."""
    original = manager.REGISTRY["insert-collectives"].run

    def broken(ir: Any) -> Any:
        result = original(ir)
        return replace(result, blocks=tuple(_misplace_all_reduce(b) for b in result.blocks))

    pipeline = tuple(
        replace(p, run=broken) if p.name == "insert-collectives" else p for p in PIPELINE
    )
    monkeypatch.setattr(manager, "PIPELINE", pipeline)
    run_passes(program)  # without verification nothing notices
    fails(
        lambda: run_passes(program, PassOptions(verify_each=True)),
        "step all_reduce_attn of attention l0 on @attn runs on [2, 3], expected [0, 1]",
    )


def _misplace_all_reduce(block: Any) -> Any:
    moved = tuple(
        replace(s, gpus=(2, 3)) if s.base == "all_reduce_attn" and s.layer == 0 else s
        for s in block.steps
    )
    return replace(block, steps=moved)


def test_pass_objects_are_what_the_spy_test_assumes() -> None:
    assert [p.name for p in PIPELINE if p.optional] == ["collapse-symmetric"]
    assert [p.name for p in PIPELINE][-2:] == ["microbatch", "order"]
    assert all(isinstance(p, Pass) for p in PIPELINE)


def test_unknown_ir_is_a_verification_error() -> None:
    fails(lambda: verify("not an IR"), "no verifier for str")


# -- FLOP conservation: the target, by hand -----------------------------------------------------


def test_expected_flops_by_hand_with_every_extra() -> None:
    """kv_heads = 1 < tp = 2, the gate on 2 GPUs, capacity 1.1: all three extras at once."""
    text = TEXT.replace("experts = 4;", "kv_heads = 1; experts = 4; capacity_factor = 1.1;")
    program = dagc.compile_text(text, "t.dag").program
    q_o = 2 * (2 * T * H * NH * D)  # q and o_proj
    kv = 2 * (2 * T * H * 1 * D)  # one KV head, unsharded
    kv_replicated = 2 * (2 * T * H * D) * (2 - 1)  # each of 2 ranks holds one
    scores = 2 * (2 * (BM * NH * S) * D * S)
    gate = 2 * T * H * 4
    t_e = math.ceil(Fraction(T * 2, 4) * Fraction("1.1"))  # 9 slots per expert
    assert t_e == 9
    experts = 2 * (T * 2) * H * 24 * 2  # T·k routed tokens, up and down (gelu)
    capacity = 2 * (4 * t_e - T * 2) * H * 24 * 2
    per_layer = q_o + kv + kv_replicated + scores + gate + gate + experts + capacity
    assert expected_flops(program) == 2 * 2 * per_layer  # 2 layers, 2 micro-batches
    verify(run_passes(program))  # and the expansion meets it


# -- the logical IR, broken on purpose ----------------------------------------------------------


def test_logical_accepts_the_program(program: Program) -> None:
    verify_logical(program)


def test_logical_layer_out_of_order(program: Program) -> None:
    (whole,) = program.ranges
    first, second = replace(whole, last=0), replace(whole, first=1)
    broken = replace(program, ranges=(second, first))
    fails(lambda: verify_logical(broken), "layers 1..1 placed where layer 0 is expected next")


def test_logical_layer_missing(program: Program) -> None:
    broken = replace(program, ranges=(replace(program.ranges[0], last=0),))
    fails(lambda: verify_logical(broken), "layers 0..0 placed, the model has 2")


def test_logical_layer_placed_twice(program: Program) -> None:
    whole = program.ranges[0]
    broken = replace(program, ranges=(whole, replace(whole, first=1)))
    fails(lambda: verify_logical(broken), "layers 1..1 placed where layer 2 is expected next")


def test_logical_block_on_unknown_group(program: Program) -> None:
    attention, moe = program.ranges[0].blocks
    blocks = (attention, replace(moe, group="nowhere"))
    broken = replace(program)
    # Program's constructor refuses an unknown group: set the field behind its back.
    object.__setattr__(broken, "ranges", (replace(program.ranges[0], blocks=blocks),))
    fails(lambda: verify_logical(broken), "moe block of layers 0..1 runs on unknown group")


def test_logical_degree_differs_from_group_size(program: Program) -> None:
    attention, moe = program.ranges[0].blocks
    broken_range = replace(program.ranges[0], blocks=(replace(attention, degree=3), moe))
    broken = replace(program, ranges=(broken_range,))
    fails(
        lambda: verify_logical(broken),
        "attention block of layers 0..1 has tp=3 but group @attn has 2 GPUs",
    )


def test_logical_experts_do_not_divide(program: Program) -> None:
    groups = (program.groups[0], replace(program.groups[1], gpus=(2, 3, 4)))
    attention, moe = program.ranges[0].blocks
    ranges = (replace(program.ranges[0], blocks=(attention, replace(moe, degree=3))),)
    broken = replace(program, groups=groups, ranges=ranges)
    fails(lambda: verify_logical(broken), "4 experts do not divide over ep=3")


def test_logical_missing_dimension(program: Program) -> None:
    broken = replace(program, model=replace(program.model, top_k=None))
    fails(lambda: verify_logical(broken), "moe block of layers 0..1 needs model top_k")


def test_logical_group_defined_twice(program: Program) -> None:
    broken = replace(program)
    object.__setattr__(broken, "groups", (program.groups[0], program.groups[0]))
    fails(lambda: verify_logical(broken), "group @attn is defined twice")


# -- the step IR, broken on purpose -------------------------------------------------------------


def with_step(steps: StepProgram, block: int, index: int, step: Step) -> StepProgram:
    """`steps` with step `index` of block `block` replaced."""
    target = steps.blocks[block]
    changed = replace(target, steps=tuple(step if i == index else s for i, s in
                                          enumerate(target.steps)))  # fmt: skip
    return replace(steps, blocks=tuple(changed if i == block else b for i, b in
                                       enumerate(steps.blocks)))  # fmt: skip


def find_step(steps: StepProgram, block: int, name: str) -> tuple[int, Step]:
    return next((i, s) for i, s in enumerate(steps.blocks[block].steps) if s.base + s.part == name)


def test_steps_accept_every_stage(program: Program) -> None:
    for each in PIPELINE:
        if each.name == "microbatch":
            break
        if not each.optional:
            verify_steps(run_passes(program, until=each.name))


def test_steps_collapsed_program_verifies(steps: StepProgram) -> None:
    collapsed = manager.REGISTRY["collapse-symmetric"].run(steps)
    verify_steps(collapsed)
    verify(run_passes(steps.program, PassOptions(enable=frozenset({"collapse-symmetric"}))))


def test_steps_per_gpu_step_has_one_term_per_gpu(steps: StepProgram) -> None:
    index, step = find_step(steps, 0, "o_proj")
    broken = replace(step)
    object.__setattr__(broken, "terms", step.terms[:1])  # the constructor would refuse it
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step o_proj of attention l0 on @attn has 1 terms, expected 2",
    )


def test_steps_joint_step_has_one_term(steps: StepProgram) -> None:
    index, step = find_step(steps, 0, "all_reduce_attn")
    broken = replace(step)
    object.__setattr__(broken, "terms", step.terms * 2)
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step all_reduce_attn of attention l0 on @attn has 2 terms, expected 1",
    )


def test_steps_gpu_listed_twice(steps: StepProgram) -> None:
    index, step = find_step(steps, 0, "softmax")
    broken = replace(step, gpus=(0, 0))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step softmax of attention l0 on @attn lists a GPU twice: [0, 0]",
    )


def test_steps_step_on_the_wrong_gpus(steps: StepProgram) -> None:
    index, step = find_step(steps, 1, "gate")
    broken = step.with_gpus((0, 1))
    fails(
        lambda: verify_steps(with_step(steps, 1, index, broken)),
        "step gate of moe l0 on @moe runs on [0, 1], expected [2, 3]",
    )


def test_steps_res2_after_an_excursion_runs_on_the_input_group(steps: StepProgram) -> None:
    index, step = find_step(steps, 1, "res2")
    assert step.gpus == (0, 1)
    broken = step.with_gpus((2, 3))
    fails(
        lambda: verify_steps(with_step(steps, 1, index, broken)),
        "step res2 of moe l0 on @moe runs on [2, 3], expected [0, 1]",
    )


def test_steps_transfer_joins_the_wrong_side(steps: StepProgram) -> None:
    index, step = find_step(steps, 1, "broadcast")
    broken = replace(step, gpus=(2, 3))
    fails(
        lambda: verify_steps(with_step(steps, 1, index, broken)),
        "step broadcast of moe l0 on @moe runs on [2, 3], expected [0, 1]",
    )


def test_steps_joint_step_that_computes(steps: StepProgram) -> None:
    index, step = find_step(steps, 0, "all_reduce_attn")
    broken = replace(step, terms=(CostTerm(TermKind.ELEMENTWISE, (5,)),))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step all_reduce_attn of attention l0 on @attn joins GPUs but computes Elem_Time(5)",
    )


def test_steps_per_gpu_step_that_communicates(steps: StepProgram) -> None:
    index, step = find_step(steps, 0, "res1")
    p2p = CostTerm(TermKind.P2P, (64,))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, replace(step, terms=(p2p, p2p)))),
        "step res1 of attention l0 on @attn runs per GPU but communicates",
    )


def test_steps_one_expert_per_gpu(steps: StepProgram) -> None:
    index, step = find_step(steps, 1, "expert.up")
    broken = replace(step)
    object.__setattr__(broken, "experts", step.experts[:1])  # the constructor would refuse it
    fails(
        lambda: verify_steps(with_step(steps, 1, index, broken)),
        "step expert.up of moe l0 on @moe names 1 experts for 2 GPUs",
    )


def test_steps_unknown_joint_step(steps: StepProgram) -> None:
    index, step = find_step(steps, 0, "all_reduce_attn")
    broken = replace(step, base="all_scatter_attn")
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step all_scatter_attn of attention l0 on @attn is a joint step dagc does not know",
    )


def test_steps_excursion_output_returns_home(steps: StepProgram) -> None:
    blocks = list(steps.blocks)
    blocks[1] = replace(blocks[1], output_gpus=(2, 3))
    fails(
        lambda: verify_steps(replace(steps, blocks=tuple(blocks))),
        "moe l0 on @moe leaves its output on [2, 3], expected [0, 1]",
    )


def test_steps_names_unique_per_microbatch(steps: StepProgram) -> None:
    index, step = find_step(steps, 2, "softmax")  # layer 1's attention
    broken = replace(step, layer=0)  # now named softmax_l0_gpu0 twice
    fails(
        lambda: verify_steps(with_step(steps, 2, index, broken)),
        "operation softmax_l0_gpu0 of attention l1 on @attn is also in attention l0 on @attn",
    )


def test_steps_blocks_follow_the_program(steps: StepProgram) -> None:
    first, second, *rest = steps.blocks
    broken = replace(steps, blocks=(second, first, *rest))
    fails(
        lambda: verify_steps(broken),
        "compute block 0 is moe l0 on @moe; the program has attention l0 on @attn there",
    )


def test_steps_input_lives_where_the_previous_block_left_it(steps: StepProgram) -> None:
    blocks = list(steps.blocks)
    blocks[2] = replace(blocks[2], input_gpus=(2, 3))
    fails(
        lambda: verify_steps(replace(steps, blocks=tuple(blocks))),
        "attention l1 on @attn reads its input on [2, 3], but the block before left it on [0, 1]",
    )


def test_steps_block_on_its_group(steps: StepProgram) -> None:
    blocks = list(steps.blocks)
    blocks[0] = replace(blocks[0], gpus=(1, 0))
    fails(
        lambda: verify_steps(replace(steps, blocks=tuple(blocks))),
        "attention l0 on @attn runs on [1, 0], its group has [0, 1]",
    )


# -- the sharding type-check of the values steps read and write, broken on purpose ------------
# Every step of the small program comes from line 5 of TEXT (`layers 0..1 { ... }`).


def value_named(steps: StepProgram, name: str) -> Value:
    """The value `name` as its writer wrote it."""
    return next(v for step in steps.steps() for v in step.writes if v.name == name)


def test_values_the_pipeline_reads_and_writes(steps: StepProgram) -> None:
    _, res1 = find_step(steps, 0, "res1")
    assert [v.name for v in res1.reads] == ["o_l0_sum"]  # layer 0 reads the program's input
    _, res1 = find_step(steps, 2, "res1")
    assert [v.name for v in res1.reads] == ["o_l1_sum", "x_l0_moe"]
    _, attn_out = find_step(steps, 0, "attn_out")
    assert [v.name for v in attn_out.reads] == ["probs_l0", "v_l0"]
    o = value_named(steps, "o_l0")
    assert o.describe() == "o_l0[tokens=16, hidden=32] bf16 partial on [0, 1]"
    q = value_named(steps, "q_l0")
    assert q.describe() == "q_l0[tokens=16, heads=4, head_dim=8] bf16 split(heads) on [0, 1]"
    assert q.local_sizes(1) == (T, NH // 2, D)
    # a transfer's output lives on the receiving group
    assert value_named(steps, "x_l0_attention_sent").gpus == (2, 3)
    assert value_named(steps, "moe_ret_l0").gpus == (0, 1)


def test_values_a_step_reads_a_partial_sum(steps: StepProgram) -> None:
    index, res1 = find_step(steps, 0, "res1")
    broken = replace(res1, reads=(value_named(steps, "o_l0"),))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step res1 of attention l0 on @attn (line 5) reads the partial sum o_l0; only a"
        " reduction (all-reduce, combine, return) may read a partial sum",
    )


def test_values_a_value_crosses_groups_without_a_transfer(steps: StepProgram) -> None:
    index, ln2 = find_step(steps, 1, "ln2")
    assert [v.name for v in ln2.reads] == ["x_l0_attention_moe"]  # what recv_moe received
    broken = replace(ln2, reads=(value_named(steps, "x_l0_attention"),))
    fails(
        lambda: verify_steps(with_step(steps, 1, index, broken)),
        "step ln2 of moe l0 on @moe (line 5) runs on [2, 3] but reads x_l0_attention, which"
        " lives on [0, 1]: a value crosses groups only through a transfer",
    )


def test_values_a_step_writes_onto_another_group(steps: StepProgram) -> None:
    index, gate = find_step(steps, 1, "gate")
    broken = replace(gate, writes=(gate.writes[0].on((0, 1)),))
    fails(
        lambda: verify_steps(with_step(steps, 1, index, broken)),
        "step gate of moe l0 on @moe (line 5) runs on [2, 3] but writes route_l0 onto [0, 1]:"
        " only a transfer writes onto other GPUs",
    )


def test_values_mismatched_contracted_dims(steps: StepProgram) -> None:
    index, o_proj = find_step(steps, 0, "o_proj")
    # rank i holds attn as [T, 2 heads, d]: o_proj contracts 2·8 = 16, not 15
    assert o_proj.terms[0].args == (T, 2 * D, H)
    wrong = CostTerm(TermKind.MATMUL, (T, 15, H))
    broken = replace(o_proj, terms=(wrong, wrong))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step o_proj of attention l0 on @attn (line 5) contracts K=15 on gpu 0, but its input"
        " attn_l0 holds [16, 2, 8] there",
    )


def test_values_read_with_another_placement(steps: StepProgram) -> None:
    index, attn_out = find_step(steps, 0, "attn_out")
    v = value_named(steps, "v_l0")
    broken = replace(attn_out, reads=(attn_out.reads[0], replace(v, placement=REPLICATED)))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step attn_out of attention l0 on @attn (line 5) reads v_l0[tokens=16, kv_heads=4,"
        " head_dim=8] bf16 replicated on [0, 1], but it was written as v_l0[tokens=16,"
        " kv_heads=4, head_dim=8] bf16 split(kv_heads) on [0, 1]",
    )


def test_values_an_input_never_written(steps: StepProgram) -> None:
    index, scores = find_step(steps, 0, "attn_scores")
    ghost = replace(value_named(steps, "k_l0"), name="k_l7")
    broken = replace(scores, reads=(scores.reads[0], ghost))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "step attn_scores of attention l0 on @attn (line 5) reads k_l7, which no earlier step"
        " writes",
    )


def test_values_read_before_written(steps: StepProgram) -> None:
    index, softmax = find_step(steps, 0, "softmax")
    broken = replace(softmax, reads=(value_named(steps, "attn_l0"),))  # attn_out's, later
    fails(
        lambda: verify_steps(with_step(steps, 0, index, broken)),
        "reads attn_l0, which no earlier step writes",
    )


def test_values_written_twice_or_not_at_all(steps: StepProgram) -> None:
    index, softmax = find_step(steps, 0, "softmax")
    twice = replace(softmax, writes=(value_named(steps, "scores_l0"),))
    fails(
        lambda: verify_steps(with_step(steps, 0, index, twice)),
        "step softmax of attention l0 on @attn (line 5) writes scores_l0, which an earlier"
        " step already writes",
    )
    fails(
        lambda: verify_steps(with_step(steps, 0, index, replace(softmax, writes=()))),
        "step softmax of attention l0 on @attn (line 5) writes no value",
    )


def test_values_check_themselves() -> None:
    hidden = (ValueDim("tokens", 4), ValueDim("hidden", 6))
    with pytest.raises(ValueError, match="split along heads, not a dim"):
        Value("x", hidden, "bf16", (0, 1), split("heads"))
    with pytest.raises(ValueError, match="distinct GPUs"):
        Value("x", hidden, "bf16", (0, 0))
    with pytest.raises(ValueError, match="bad value name"):
        Value("x y", hidden, "bf16", (0,))
    with pytest.raises(ValueError, match="names a dim twice"):
        Value("x", (*hidden, ValueDim("tokens", 2)), "bf16", (0,))
    # split(6, 4) = [2, 2, 1, 1]
    assert Value("x", hidden, "bf16", (0, 1, 2, 3), split("hidden")).local_sizes(3) == (4, 1)
    assert Value("x", hidden, "bf16", (0, 1), PARTIAL).local_sizes(1) == (4, 6)


# -- the device DAG, broken on purpose ----------------------------------------------------------


def op_ids(graph: DeviceGraph) -> dict[str, int]:
    return {graph.name(op): op for op in range(graph.num_ops)}


def edge_index(graph: DeviceGraph, source: str, target: str) -> int:
    ids = op_ids(graph)
    (index,) = np.flatnonzero((graph.src == ids[source]) & (graph.dst == ids[target]))
    return int(index)


def without_edge(graph: DeviceGraph, source: str, target: str) -> DeviceGraph:
    keep = np.ones(graph.num_edges, dtype=bool)
    keep[edge_index(graph, source, target)] = False
    return graph.with_edges(graph.src[keep], graph.dst[keep], graph.edge_kind[keep])


def with_edge(graph: DeviceGraph, source: str, target: str, kind: int) -> DeviceGraph:
    ids = op_ids(graph)
    return graph.with_edges(
        np.append(graph.src, ids[source]),
        np.append(graph.dst, ids[target]),
        np.append(graph.edge_kind, np.uint8(kind)),
    )


def with_steps(graph: DeviceGraph, change: Callable[[Step], Step]) -> DeviceGraph:
    """The same edges over steps rewritten by `change` (the template is rebuilt)."""
    blocks = tuple(replace(b, steps=tuple(change(s) for s in b.steps)) for b in graph.blocks)
    return DeviceGraph(
        graph.program,
        blocks,
        graph.microbatches,
        graph.src,
        graph.dst,
        graph.edge_kind,
        graph.symmetry,
    )


def test_device_accepts_the_graph(graph: DeviceGraph) -> None:
    verify_device(graph)


def test_device_dropped_program_order_edge(graph: DeviceGraph) -> None:
    """q and k both read ln1: only the order edge between them puts them in a sequence."""
    assert graph.edge_kind[edge_index(graph, "qkv_l0_gpu0_mb0.q", "qkv_l0_gpu0_mb0.k")] == 1
    broken = without_edge(graph, "qkv_l0_gpu0_mb0.q", "qkv_l0_gpu0_mb0.k")
    verify_device(broken, ordered=False)  # before the order pass no chain is required
    fails(
        lambda: verify_device(broken),
        "program order on gpu 0 is not a chain: nothing orders qkv_l0_gpu0_mb0.q and"
        " qkv_l0_gpu0_mb0.k",
    )


def test_device_dropped_data_edge(graph: DeviceGraph) -> None:
    broken = without_edge(graph, "softmax_l0_gpu0_mb0", "attn_out_l0_gpu0_mb0")
    # attn_out still reads v, so it keeps an edge in: softmax is the op left unlinked
    fails(
        lambda: verify_device(broken),
        "op softmax_l0_gpu0_mb0 has no edge to the op after it on gpu 0",
    )


def test_device_joint_op_not_joined_to_a_previous_op(graph: DeviceGraph) -> None:
    broken = without_edge(graph, "o_proj_l0_gpu1_mb0", "all_reduce_attn_l0_mb0")
    fails(
        lambda: verify_device(broken),
        "joint op all_reduce_attn_l0_mb0 has no edge from the op before it on gpu 1",
    )


def test_device_joint_op_not_joined_to_a_next_op(graph: DeviceGraph) -> None:
    broken = without_edge(graph, "recv_moe_l0_mb0", "ln2_l0_gpu3_mb0")
    fails(
        lambda: verify_device(broken),
        "joint op recv_moe_l0_mb0 has no edge to the op after it on gpu 3",
    )


def test_device_duplicate_name(graph: DeviceGraph) -> None:
    def rename(step: Step) -> Step:
        return replace(step, base="attn_scores") if step.base == "attn_out" else step

    fails(lambda: verify_device(with_steps(graph, rename)), "two operations are named")


def test_device_data_edge_across_microbatches(graph: DeviceGraph) -> None:
    broken = with_edge(graph, "ln1_l0_gpu0_mb0", "qkv_l0_gpu0_mb1.q", DATA_EDGE)
    fails(
        lambda: verify_device(broken),
        "data edge ln1_l0_gpu0_mb0 -> qkv_l0_gpu0_mb1.q crosses micro-batches",
    )


def test_device_data_edge_backwards(graph: DeviceGraph) -> None:
    broken = with_edge(graph, "res1_l0_gpu0_mb0", "ln1_l0_gpu0_mb0", DATA_EDGE)
    fails(
        lambda: verify_device(broken),
        "data edge res1_l0_gpu0_mb0 -> ln1_l0_gpu0_mb0 goes backwards in the step program",
    )


def test_device_cycle(graph: DeviceGraph) -> None:
    # gpu 0 runs layer 0 of micro-batch 0 before layer 0 of micro-batch 1: an order edge back
    # closes a cycle without breaking any rule about data edges.
    broken = with_edge(graph, "res1_l0_gpu0_mb1", "ln1_l0_gpu0_mb0", ORDER_EDGE)
    fails(lambda: verify_device(broken), "the graph has a cycle: ")


def test_device_unknown_edge_kind(graph: DeviceGraph) -> None:
    kinds = graph.edge_kind.copy()
    kinds[0] = 2
    broken = graph.with_edges(graph.src, graph.dst, kinds)
    fails(lambda: verify_device(broken), "has kind 2, neither data nor order")


def test_device_edge_listed_twice(graph: DeviceGraph) -> None:
    broken = with_edge(graph, "ln1_l0_gpu0_mb0", "qkv_l0_gpu0_mb0.q", DATA_EDGE)
    fails(
        lambda: verify_device(broken), "edge ln1_l0_gpu0_mb0 -> qkv_l0_gpu0_mb0.q is listed twice"
    )


def test_device_self_loop(graph: DeviceGraph) -> None:
    broken = with_edge(graph, "ln1_l0_gpu0_mb0", "ln1_l0_gpu0_mb0", ORDER_EDGE)
    fails(lambda: verify_device(broken), "edge ln1_l0_gpu0_mb0 -> ln1_l0_gpu0_mb0 is a loop")


def test_device_edge_out_of_range(graph: DeviceGraph) -> None:
    broken = graph.with_edges(
        np.append(graph.src, 0), np.append(graph.dst, graph.num_ops), np.append(graph.edge_kind, 0)
    )
    fails(lambda: verify_device(broken), f"outside the {graph.num_ops} operations")


def test_device_missing_flop(graph: DeviceGraph) -> None:
    """o_proj of layer 1 on gpu 1 loses one of its 16 input columns: 2·T·1·H FLOPs."""

    def shrink(step: Step) -> Step:
        if step.base != "o_proj" or step.layer != 1:
            return step
        m, k, n = step.terms[1].args
        return replace(step, terms=(step.terms[0], CostTerm(TermKind.MATMUL, (m, k - 1, n))))

    # Attention of one layer and micro-batch, unsharded: q, k, v, o_proj, scores, weights·V.
    attention = 4 * (2 * T * H * NH * D) + 2 * (2 * (BM * NH * S) * D * S)
    fails(
        lambda: verify_device(with_steps(graph, shrink)),
        f"layer 1 attention: matmul FLOPs per micro-batch are {attention - 2 * T * H:,},"
        f" the program needs {attention:,} (+{2 * T * H:,})",
    )


def test_device_gpu_listed_twice(graph: DeviceGraph) -> None:
    def twice(step: Step) -> Step:
        return replace(step, gpus=(0, 0)) if step.base == "ln1" and step.layer == 0 else step

    fails(lambda: verify_device(with_steps(graph, twice)), "step ln1_l0_gpu0 lists a GPU twice")


PIPELINE_TEXT = """
model p { layers = 2; hidden = 32; heads = 4; ffn = 64 }
workload { batch = 4; seq = 8 }
devices { group s0 = gpu[0..1]; group s1 = gpu[2..3] }
layers 0..1 on s0, s1 pp=2 { attention; mlp }
"""


@pytest.fixture(scope="module")
def pipeline_steps() -> StepProgram:
    program = dagc.compile_text(PIPELINE_TEXT, "p.dag").program
    result = run_passes(program, until="insert-transfers")
    assert isinstance(result, StepProgram)
    return result


def test_steps_pipeline_send_joins_the_sending_side(pipeline_steps: StepProgram) -> None:
    transfer = next(i for i, b in enumerate(pipeline_steps.blocks) if b.kind == "transfer")
    index, send = find_step(pipeline_steps, transfer, "send_stage1")
    assert send.gpus == (0, 1)
    broken = with_step(pipeline_steps, transfer, index, replace(send, gpus=(2, 3)))
    fails(
        lambda: verify_steps(broken),
        "step send_stage1 of transfer l1 on @s1 runs on [2, 3], expected [0, 1]",
    )


def test_steps_transfer_leads_to_its_block(pipeline_steps: StepProgram) -> None:
    transfer = next(b for b in pipeline_steps.blocks if b.kind == "transfer")
    dangling = replace(transfer, input_gpus=(2, 3))  # after the last block, on its GPUs
    fails(
        lambda: verify_steps(replace(pipeline_steps, blocks=(*pipeline_steps.blocks, dangling))),
        "transfer to l1 leads to no block on its GPUs",
    )


# Issue 14's MoE and embedding features, each through every verifier after every pass.
REAL_FEATURES = {
    "shared_experts": """\
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24
          activation = swiglu; shared_experts = 2; shared_expert_gate = true }
workload { batch = 3; seq = 8; microbatches = 3 }
devices { group attn = gpu[0..1]; group moe = gpu[2..4] }
layers 0..0 { attention on attn tp=2; moe on attn ep=2 }
layers 1..1 { attention on attn tp=2; moe on moe ep=3 overlap }
""".replace("experts = 4", "experts = 6"),
    "routed_dispatch": """\
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24
          shared_experts = 1 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group attn = gpu[0..2]; group moe = gpu[3..4] }
layers 0..1 { attention on attn tp=2; moe on moe ep=2 dispatch=routed }
""".replace("tp=2", "tp=3"),
    "vocab_parallel_tied": """\
model m { layers = 2; hidden = 32; heads = 4; ffn = 64; vocab = 99; tied_embeddings = true }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group a = gpu[0..3]; group b = gpu[4..5]; split_sends = true }
layers 0..0 on a { embed vocab_parallel overlap; attention tp=4; mlp tp=4 }
layers 1..1 on b overlap { attention tp=2; mlp tp=2; lm_head tp=2 }
""",
}


@pytest.mark.parametrize("symmetric", [False, True], ids=["full", "collapsed"])
@pytest.mark.parametrize("name", sorted(REAL_FEATURES))
def test_real_features_verify_after_every_pass(
    monkeypatch: pytest.MonkeyPatch, name: str, symmetric: bool
) -> None:
    seen = verified_levels(monkeypatch, REAL_FEATURES[name], symmetric)
    assert seen == expected_levels(symmetric)


def routed_steps() -> StepProgram:
    routed = TEXT.replace("moe on moe ep=2", "moe on moe ep=2 dispatch=routed")
    result = run_passes(dagc.compile_text(routed, "t.dag").program, until="insert-transfers")
    assert isinstance(result, StepProgram)
    return result


def test_steps_routed_gate_runs_on_the_input_group() -> None:
    steps = routed_steps()
    index, step = find_step(steps, 1, "gate")
    assert step.gpus == (0, 1)
    fails(
        lambda: verify_steps(with_step(steps, 1, index, step.with_gpus((2, 3)))),
        "step gate of moe l0 on @moe runs on [2, 3], expected [0, 1]",
    )


def test_steps_routed_dispatch_joins_both_groups() -> None:
    steps = routed_steps()
    index, step = find_step(steps, 1, "dispatch")
    assert step.gpus == (0, 1, 2, 3)
    fails(
        lambda: verify_steps(with_step(steps, 1, index, replace(step, gpus=(2, 3)))),
        "step dispatch of moe l0 on @moe runs on [2, 3], expected [0, 1, 2, 3]",
    )


def test_steps_split_send_gather_joins_the_receiving_side() -> None:
    text = """\
model m { layers = 2; hidden = 32; heads = 4; ffn = 64 }
workload { batch = 4; seq = 8 }
devices { group a = gpu[0..1]; group b = gpu[2..3]; split_sends = true }
layers 0..0 on a { attention tp=2; mlp tp=2 }
layers 1..1 on b { attention tp=2; mlp tp=2 }
"""
    steps = run_passes(dagc.compile_text(text, "t.dag").program, until="insert-transfers")
    assert isinstance(steps, StepProgram)
    transfer = next(i for i, b in enumerate(steps.blocks) if b.kind == "transfer")
    index, step = find_step(steps, transfer, "gather_stage1")
    fails(
        lambda: verify_steps(with_step(steps, transfer, index, replace(step, gpus=(0, 1)))),
        "step gather_stage1 of transfer l1 on @b runs on [0, 1], expected [2, 3]",
    )
