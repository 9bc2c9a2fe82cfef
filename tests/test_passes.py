"""Each expansion pass on its own: what it adds to the IR it is given.

A small program (2 layers, attention on 2 GPUs with tp=2, moe on 2 other GPUs with ep=2,
2 micro-batches) is lowered pass by pass; each test looks at one pass's output. Expected
values come from the semantics by hand: T = 2 sequences x 8 tokens = 16, H = 32, 4 heads
of d = 8 (2 per rank), 4 experts (2 per MoE GPU), top_k 2: T_e = ceil(16·2/4) = 8.
"""

from __future__ import annotations

from typing import Any

import pytest

import dagc
from dagc.blocks.shapes import count
from dagc.ir.device import DATA_EDGE, ORDER_EDGE, DeviceGraph
from dagc.ir.steps import Step, StepProgram
from dagc.ir.terms import CostTerm, TermKind, elementwise
from dagc.ir.values import Dim, Value
from dagc.passes.collectives import insert_collectives
from dagc.passes.manager import PIPELINE, REGISTRY, run_passes
from dagc.passes.microbatch import microbatch, template_data_edges
from dagc.passes.order import order
from dagc.passes.place import place
from dagc.passes.shard import shard_attention, shard_embed_head, shard_mlp, shard_moe
from dagc.passes.symmetry import collapse_symmetric
from dagc.passes.transfers import insert_transfers

TEXT = """
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group attn = gpu[0..1]; group moe = gpu[2..3] }
layers 0..1 { attention on attn tp=2; moe on moe ep=2 }
"""


@pytest.fixture(scope="module")
def program() -> Any:
    return dagc.compile_text(TEXT, "t.dag").program


def _bases(steps: StepProgram) -> list[str]:
    return [step.base + step.part for step in steps.steps()]


def test_registry_names_match_the_passes() -> None:
    assert list(REGISTRY) == [p.name for p in PIPELINE]
    assert [p.name for p in PIPELINE if p.optional] == ["collapse-symmetric"]
    assert REGISTRY["place"].run is place and REGISTRY["order"].run is order


def test_place_lists_blocks_layer_by_layer(program: Any) -> None:
    steps = place(program)
    assert [(b.kind, b.layer, b.gpus) for b in steps.blocks] == [
        ("attention", 0, (0, 1)),
        ("moe", 0, (2, 3)),
        ("attention", 1, (0, 1)),
        ("moe", 1, (2, 3)),
    ]
    moe = steps.blocks[1]
    assert moe.excursion and moe.input_gpus == (0, 1) and moe.output_gpus == (0, 1)
    assert all(not b.steps for b in steps.blocks)


def test_shard_attention_splits_heads(program: Any) -> None:
    steps = shard_attention(place(program))
    attention = steps.blocks[0]
    assert [s.base + s.part for s in attention.steps] == [
        "ln1", "qkv.q", "qkv.k", "qkv.v", "attn_scores", "softmax", "attn_out", "o_proj", "res1",
    ]  # fmt: skip
    q = attention.steps[1]
    assert [t.args for t in q.terms] == [(16, 32, 16), (16, 32, 16)]  # 2 heads x d = 8
    scores = attention.steps[4]
    assert scores.terms[0].args == (2 * 2 * 8, 8, 8)  # Bm·h·S, d, S
    assert all(not b.steps for b in steps.blocks if b.kind == "moe")


def test_shard_mlp_leaves_a_program_without_mlp_alone(program: Any) -> None:
    before = place(program)
    assert shard_mlp(before) == before


def test_shard_moe_gives_each_gpu_its_experts(program: Any) -> None:
    moe = shard_moe(place(program)).blocks[1]
    experts = [s for s in moe.steps if s.base == "expert"]
    assert [(s.part, s.experts) for s in experts] == [
        (".up", (0, 2)), (".act", (0, 2)), (".down", (0, 2)),
        (".up", (1, 3)), (".act", (1, 3)), (".down", (1, 3)),
    ]  # fmt: skip
    assert experts[0].terms[0].args == (8, 32, 24)  # T_e, H, Fe
    gate = next(s for s in moe.steps if s.base == "gate")
    assert gate.terms[0].args == (16, 32, 4)  # T, H, E on every rank


def test_shard_embed_head_without_those_blocks_changes_nothing(program: Any) -> None:
    before = place(program)
    assert shard_embed_head(before) == before


def test_insert_collectives_adds_the_attention_all_reduce(program: Any) -> None:
    steps = insert_collectives(shard_moe(shard_attention(place(program))))
    attention, moe = steps.blocks[0], steps.blocks[1]
    names = [s.base for s in attention.steps]
    assert names.index("all_reduce_attn") == names.index("o_proj") + 1
    [reduce] = [s for s in attention.steps if s.joint]
    assert reduce.terms[0].kind is TermKind.ALL_REDUCE and reduce.terms[0].args == (16 * 32 * 2, 2)
    # The moe block is an excursion: its tokens arrive by broadcast, so no all-to-all.
    assert not any(s.joint for s in moe.steps)


def test_insert_transfers_adds_broadcast_and_return(program: Any) -> None:
    steps = insert_transfers(insert_collectives(shard_moe(shard_attention(place(program)))))
    moe = steps.blocks[1]
    assert [s.base for s in moe.steps][:2] == ["broadcast", "recv_moe"]
    assert [s.base for s in moe.steps][-2:] == ["return", "res2"]
    assert moe.steps[-1].gpus == (0, 1)  # res2 where the residual stream lives
    back = moe.steps[-2]
    # Each MoE GPU returns min(T, T_e·E/e) = min(16, 8·2) = 16 tokens of H·w bytes.
    # The MoE GPUs send it; the attention GPUs wait through res2's data edge.
    assert back.gpus == (2, 3) and back.terms[0].args == (16 * 32 * 2,)


def test_microbatch_repeats_the_template(program: Any) -> None:
    steps = run_passes(program, until="insert-transfers")
    graph = microbatch(steps)
    assert isinstance(graph, DeviceGraph)
    width = sum(step.width for step in steps.steps())
    assert graph.num_ops == 2 * width
    assert set(graph.edge_kind.tolist()) == {DATA_EDGE}
    # No data edge crosses micro-batches.
    assert ((graph.src // width) == (graph.dst // width)).all()


def test_data_edges_join_each_value_to_its_readers() -> None:
    """Edges come from values, not from step order: c reads a (written two steps before)."""
    a, b = (Value(n, (Dim("tokens", 4),), "bf16", (0, 1)) for n in ("a", "b"))
    term = elementwise(count(4))
    steps = (
        Step("sa", 0, (0, 1), (term, term), writes=(a,)),
        Step("sb", 0, (0, 1), (term, term), writes=(b,)),
        Step("sc", 0, (0, 1), (term, term), reads=(a, a), writes=()),
        Step("all", 0, (0, 1), (CostTerm(TermKind.SYNC, ()),), joint=True, reads=(a, b)),
    )
    src, dst = template_data_edges(steps)
    # sa's ranks are ops 0-1, sb's 2-3, sc's 4-5, the joint step op 6: per GPU within the
    # group, and every rank into the joint step; a read twice makes one edge
    assert sorted(zip(src, dst, strict=True)) == [(0, 4), (0, 6), (1, 5), (1, 6), (2, 6), (3, 6)]


def test_order_adds_program_order_edges(program: Any) -> None:
    data = microbatch(run_passes(program, until="insert-transfers"))
    ordered = order(data)
    assert ordered.num_edges > data.num_edges
    added = ordered.edge_kind == ORDER_EDGE
    names = {
        (ordered.name(int(s)), ordered.name(int(d)))
        for s, d in zip(ordered.src[added], ordered.dst[added], strict=True)
    }
    assert ("qkv_l0_gpu0_mb0.q", "qkv_l0_gpu0_mb0.k") in names  # q, k, v run in turn
    # Ping-pong: gpu 2 finishes layer 0 of micro-batch 0 (the return), then takes mb 1.
    assert ("return_l0_mb0", "recv_moe_l0_mb1") in names


def test_collapse_symmetric_keeps_one_gpu_per_class(program: Any) -> None:
    steps = collapse_symmetric(run_passes(program, until="insert-transfers"))
    assert sorted({g for s in steps.steps() for g in s.gpus}) == [0, 2]
    assert steps.symmetry is not None and steps.symmetry.class_size == {0: 2, 2: 2}


ROUTED = TEXT.replace("moe on moe ep=2", "moe on moe ep=2 dispatch=routed")


def test_order_keeps_ping_pong_units_with_routed_dispatch() -> None:
    """The attention GPUs' unit (l, j) is res2 of l-1, attention l, ln2, gate and dispatch
    for micro-batch j; the MoE GPUs' is dispatch, recv_moe, experts and return."""
    assert ROUTED != TEXT
    routed = dagc.compile_text(ROUTED, "t.dag").program
    ordered = order(microbatch(run_passes(routed, until="insert-transfers")))
    added = ordered.edge_kind == ORDER_EDGE
    names = {
        (ordered.name(int(s)), ordered.name(int(d)))
        for s, d in zip(ordered.src[added], ordered.dst[added], strict=True)
    }
    # gpu 0: the dispatch of micro-batch 0 ends its unit, micro-batch 1's attention follows;
    # after the last micro-batch's dispatch, res2 of layer 0 opens layer 1's unit
    assert ("dispatch_l0_mb0", "ln1_l0_gpu0_mb1") in names
    assert ("dispatch_l0_mb1", "res2_l0_gpu0_mb0") in names
    assert ("dispatch_l1_mb0", "res2_l0_gpu0_mb1") in names
    # gpu 2: micro-batch 0 returned, then the dispatch of micro-batch 1
    assert ("return_l0_mb0", "dispatch_l0_mb1") in names
    assert ("return_l0_mb1", "dispatch_l1_mb0") in names
