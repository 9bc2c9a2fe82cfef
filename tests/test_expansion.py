"""Expansion to the device DAG, checked against the reference semantics.

Every expected number here is derived from the semantics (shapes, splitting rule, FLOP
conservation, pipeline rule) by hand or by closed form in the test, never copied from dagc's
output.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagc
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.backends.device_json import to_networkx
from dagc.diagnostics import Severity
from dagc.expand import expand
from dagc.ir.device import DATA_EDGE, ORDER_EDGE, DeviceGraph, Operation
from dagc.ir.logical import (
    Activation,
    AttentionKernel,
    AttentionMask,
    Block,
    BlockKind,
    Mode,
    MoeDispatch,
    Program,
)
from dagc.ir.terms import CostTerm, TermKind
from helpers import EXAMPLES, example_files

SEED = EXAMPLES / "seed"
BASELINE = SEED / "baseline_tp8_pp2.dag"
MA = SEED / "ma_separation.dag"

# The seed workload: B = 1024, S = 2048, bf16; T = B·S with one micro-batch.
B, S, H, D = 1024, 2048, 4096, 128
T = B * S
W = 2


# -- helpers ----------------------------------------------------------------------------------


def expand_text(text: str, *, max_ops: int | None = None) -> DeviceGraph:
    compiled = dagc.compile_text(text, "t.dag")
    if max_ops is None:
        return expand(compiled).graph
    return expand(compiled, max_ops=max_ops).graph


@cache
def expand_file(path: Path, microbatches: int | None = None) -> DeviceGraph:
    """The file's device DAG, with `microbatches` set in its workload if given."""
    text = path.read_text(encoding="utf-8")
    if microbatches is not None:
        text = with_microbatches(text, microbatches)
    return expand(dagc.compile_text(text, str(path))).graph


def with_microbatches(text: str, m: int) -> str:
    """The seed text with `microbatches = m` added to its workload section."""
    if "workload { batch = 1024; seq = 2048; dtype = bf16 }" in text:
        return text.replace("dtype = bf16 }", f"dtype = bf16; microbatches = {m} }}")
    assert "  dtype = bf16\n}" in text
    return text.replace("  dtype = bf16\n}", f"  dtype = bf16\n  microbatches = {m}\n}}")


def by_name(graph: DeviceGraph) -> dict[str, Operation]:
    return {op.name: op for op in graph.operations()}


def by_node(graph: DeviceGraph) -> dict[str, list[Operation]]:
    nodes: dict[str, list[Operation]] = defaultdict(list)
    for op in graph.operations():
        nodes[op.node].append(op)
    return nodes


def mm(m: int, k: int, n: int) -> CostTerm:
    return CostTerm(TermKind.MATMUL, (m, k, n))


def elem(n: int) -> CostTerm:
    return CostTerm(TermKind.ELEMENTWISE, (n,))


def comm(kind: TermKind, *args: int, nodes: int = 1) -> CostTerm:
    return CostTerm(kind, args, nodes)


SYNC = CostTerm(TermKind.SYNC, ())


def split(n: int, p: int) -> list[int]:
    """The semantics' splitting rule, written out again for the tests."""
    return [n // p + (1 if i < n % p else 0) for i in range(p)]


def edge_set(graph: DeviceGraph) -> dict[tuple[str, str], int]:
    names = [graph.name(op) for op in range(graph.num_ops)]
    return {
        (names[s], names[d]): k
        for s, d, k in zip(
            graph.src.tolist(), graph.dst.tolist(), graph.edge_kind.tolist(), strict=True
        )
    }


def gpu_programs(graph: DeviceGraph) -> dict[int, list[int]]:
    """Each GPU's operations in the one order its edges allow; fails if that order is not
    unique (the ops touching one GPU must form a chain: a Hamiltonian path)."""
    n = graph.num_ops
    gpus_of = [graph.gpus_of(op) for op in range(n)]
    ops_on: dict[int, list[int]] = defaultdict(list)
    for op, gpus in enumerate(gpus_of):
        for gpu in gpus:
            ops_on[gpu].append(op)
    succ: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    indegree: dict[int, Counter[int]] = defaultdict(Counter)
    for s, d in zip(graph.src.tolist(), graph.dst.tolist(), strict=True):
        for gpu in set(gpus_of[s]) & set(gpus_of[d]):
            succ[gpu][s].append(d)
            indegree[gpu][d] += 1
    programs: dict[int, list[int]] = {}
    for gpu, ops in ops_on.items():
        frontier = [op for op in ops if indegree[gpu][op] == 0]
        order: list[int] = []
        while frontier:
            assert len(frontier) == 1, (
                f"gpu {gpu}: {[graph.name(o) for o in frontier]} are not ordered"
            )
            op = frontier.pop()
            order.append(op)
            for nxt in succ[gpu][op]:
                indegree[gpu][nxt] -= 1
                if indegree[gpu][nxt] == 0:
                    frontier.append(nxt)
        assert len(order) == len(ops), f"gpu {gpu}: a cycle among its operations"
        programs[gpu] = order
    return programs


def matmul_seconds(graph: DeviceGraph, scale: float = 1e15) -> np.ndarray:
    """Per-op costs: 2·M·K·N/scale for Get_Time, 0 for every other term."""
    term_costs = np.zeros(len(graph.terms), dtype=np.float64)
    for index, term in enumerate(graph.terms.terms):
        if term.kind is TermKind.MATMUL:
            m, k, n = term.args
            term_costs[index] = 2 * m * k * n / scale
    return op_costs(graph, term_costs)


def g(m: int, k: int, n: int, scale: float = 1e15) -> float:
    return 2 * m * k * n / scale


# -- 1. the seed shapes -------------------------------------------------------------------------


def test_ma_separation_attention_shapes() -> None:
    ops = by_name(expand_file(MA))
    nodes = by_node(expand_file(MA))
    # 32 heads over tp=12: ranks 0-7 (gpus 0-7) get 3 heads, ranks 8-11 get 2; kv = nh.
    assert split(32, 12) == [3] * 8 + [2] * 4
    for gpu, heads in ((0, 3), (7, 3), (8, 2), (11, 2)):
        qkv = nodes[f"qkv_l0_gpu{gpu}"]
        assert [op.name for op in qkv] == [f"qkv_l0_gpu{gpu}.{p}" for p in "qkv"]
        assert all(op.term == mm(T, H, heads * D) for op in qkv)
        assert all(op.gpus == (gpu,) and op.kind == "matmul" for op in qkv)
        assert ops[f"attn_scores_l0_gpu{gpu}"].term == mm(B * heads * S, D, S)
        assert ops[f"softmax_l0_gpu{gpu}"].term == elem(B * heads * S * S)
        assert ops[f"attn_out_l0_gpu{gpu}"].term == mm(B * heads * S, S, D)
        assert ops[f"o_proj_l0_gpu{gpu}"].term == mm(T, heads * D, H)
        assert ops[f"ln1_l0_gpu{gpu}"].term == elem(T * H)
        assert ops[f"res1_l0_gpu{gpu}"].term == elem(T * H)
    # The brief's literal numbers.
    assert ops["qkv_l0_gpu0.q"].term == mm(1024 * 2048, 4096, 384)
    assert ops["qkv_l0_gpu8.v"].term == mm(1024 * 2048, 4096, 256)
    assert ops["attn_scores_l0_gpu0"].term == mm(1024 * 3 * 2048, 128, 2048)
    assert ops["attn_scores_l0_gpu11"].term == mm(1024 * 2 * 2048, 128, 2048)
    assert ops["o_proj_l0_gpu0"].term == mm(2097152, 384, 4096)
    # The all-reduce joins gpus 0..11, which span two nodes of 8.
    reduce = ops["all_reduce_attn_l0"]
    assert reduce.gpus == tuple(range(12))
    assert reduce.term == comm(TermKind.ALL_REDUCE, T * H * W, 12, nodes=2)
    assert reduce.kind == "collective"


def test_ma_separation_moe_shapes() -> None:
    graph = expand_file(MA)
    ops = by_name(graph)
    # top_k = E = 16: T_e = ceil(T·16/16) = T; each of 4 GPUs holds 16/4 = 4 experts.
    assert ops["gate_l0_gpu12"].term == mm(2097152, 4096, 16)
    for gpu in range(12, 16):
        assert ops[f"gate_l{3}_gpu{gpu}"].term == mm(T, H, 16)
        assert ops[f"ln2_l0_gpu{gpu}"].term == elem(T * H)
        held = min(T, T * 16 // 4)
        assert ops[f"expert_agg_l0_gpu{gpu}"].term == elem(held * H)
    up = ops["expert_l0_15_gpu15.up"]
    assert up.term == mm(2097152, 4096, 16384)
    assert up.node == "expert_l0_15_gpu15"
    assert ops["expert_l0_15_gpu15.act"].term == elem(T * 16384)
    assert ops["expert_l0_15_gpu15.down"].term == mm(T, 16384, H)
    assert "expert_l0_15_gpu15.gate" not in ops  # gelu: no gate product
    pattern = re.compile(r"expert_l0_(\d+)_gpu(\d+)$")
    held_by: dict[int, set[int]] = defaultdict(set)
    for op in graph.operations():
        match = pattern.match(op.node)
        if match:
            held_by[int(match[2])].add(int(match[1]))
            assert op.gpus == (int(match[2]),)
    assert held_by == {12 + i: set(range(4 * i, 4 * i + 4)) for i in range(4)}
    # No res2 or gate on the attention side, no attention on the MoE side.
    assert "gate_l0_gpu0" not in ops and "res2_l0_gpu12" not in ops
    assert "ln1_l0_gpu12" not in ops


def test_ma_separation_transfers() -> None:
    ops = by_name(expand_file(MA))
    for layer in range(4):
        broadcast = ops[f"broadcast_l{layer}"]
        assert broadcast.term == comm(TermKind.BROADCAST, T * H * W, 4 + 1, nodes=2)
        assert broadcast.gpus == tuple(range(12))
        receive = ops[f"recv_moe_l{layer}"]
        assert receive.term == SYNC and receive.gpus == (12, 13, 14, 15)
        back = ops[f"return_l{layer}"]
        # min(T, T_e·E/e) = min(T, 4T) tokens of H·w bytes, priced across both groups but
        # in the program order of the sending MoE GPUs only.
        assert back.term == comm(TermKind.P2P, min(T, T * 16 // 4) * H * W, nodes=2)
        assert back.gpus == (12, 13, 14, 15)
        for gpu in range(12):
            assert ops[f"res2_l{layer}_gpu{gpu}"].term == elem(T * H)
        assert f"dispatch_l{layer}" not in ops and f"combine_l{layer}" not in ops
    # Per layer: attention 12·9 + all-reduce; moe: broadcast, recv, 4·(ln2, gate, 4·3
    # expert products/acts, agg), return, 12 res2.
    assert expand_file(MA).num_ops == 4 * ((12 * 9 + 1) + (2 + 4 * (2 + 12 + 1) + 1 + 12))


def test_baseline_shapes() -> None:
    graph = expand_file(BASELINE)
    ops = by_name(graph)
    # 32 heads over tp=8: 4 heads each (head_dim 128 -> 512 columns); ffn 16384/8 = 2048.
    for gpu in (0, 5, 8, 15):
        layer = 0 if gpu < 8 else 2
        name = f"o_proj_l{layer}_gpu{gpu}"
        assert ops[name].term == mm(1024 * 2048, 512, 4096)  # not the seed's 341
        for part in "qkv":
            assert ops[f"qkv_l{layer}_gpu{gpu}.{part}"].term == mm(2097152, 4096, 512)
        assert ops[f"attn_scores_l{layer}_gpu{gpu}"].term == mm(B * 4 * S, D, S)
        assert ops[f"attn_out_l{layer}_gpu{gpu}"].term == mm(B * 4 * S, S, D)
        assert ops[f"mlp_up_l{layer}_gpu{gpu}"].term == mm(2097152, 4096, 2048)
        assert ops[f"mlp_act_l{layer}_gpu{gpu}"].term == elem(T * 2048)
        assert ops[f"mlp_down_l{layer}_gpu{gpu}"].term == mm(T, 2048, H)
        assert f"mlp_gate_l{layer}_gpu{gpu}" not in ops
    names = [op.name for op in graph.operations()]
    assert names.count("send_stage1") == 1 and names.count("recv_stage1") == 1
    assert not [n for n in names if "stage" in n and n not in ("send_stage1", "recv_stage1")]
    send, receive = ops["send_stage1"], ops["recv_stage1"]
    assert send.gpus == tuple(range(8)) and receive.gpus == tuple(range(8, 16))
    assert send.term.kind is TermKind.P2P and send.term.args == (T * H * W,)
    assert send.term.nodes == 2  # gpus 0-7 to 8-15 crosses from node 0 to node 1
    assert receive.term == SYNC
    for layer in range(4):
        gpus = tuple(range(8)) if layer < 2 else tuple(range(8, 16))
        for base in ("all_reduce_attn", "all_reduce_mlp"):
            op = ops[f"{base}_l{layer}"]
            assert op.gpus == gpus
            assert op.term == comm(TermKind.ALL_REDUCE, T * H * W, 8)  # within one node
    assert ops["all_reduce_attn_l0"].term == comm(TermKind.ALL_REDUCE, 17179869184, 8)
    # Per layer: attention 8·9 + 1, mlp 8·5 + 1; plus send and recv.
    assert graph.num_ops == 4 * (8 * 9 + 1 + 8 * 5 + 1) + 2


def test_fused_qkv_is_one_product() -> None:
    text = BASELINE.read_text().replace("attention tp=8", "attention tp=8 fused_qkv")
    ops = by_name(expand_text(text))
    assert ops["qkv_l0_gpu0"].term == mm(T, H, (4 + 2 * 4) * D)
    assert ops["qkv_l0_gpu0"].node == "qkv_l0_gpu0"
    assert not [n for n in ops if n.startswith("qkv_l0_gpu0.")]


def test_kv_heads_fewer_than_tp_are_replicated() -> None:
    # nkv = 2 < tp = 4: every rank computes one KV head; 8 query heads split 2 each.
    text = (
        "model m { layers = 1; hidden = 64; heads = 8; kv_heads = 2; ffn = 64 }\n"
        "workload { batch = 2; seq = 4 }\n"
        "devices { group a = gpu[0..3] }\n"
        "layers 0 on a { attention; mlp }\n"
    )
    ops = by_name(expand_text(text))
    for gpu in range(4):
        assert ops[f"qkv_l0_gpu{gpu}.q"].term == mm(8, 64, 2 * 8)
        assert ops[f"qkv_l0_gpu{gpu}.k"].term == mm(8, 64, 1 * 8)
        assert ops[f"qkv_l0_gpu{gpu}.v"].term == mm(8, 64, 1 * 8)


def test_moe_on_the_attention_group_uses_all_to_all() -> None:
    # E = 8, k = 2, e = 4, T = 2·4 = 8: T_e = ceil(8·2/8 · 1.25) = ceil(2.5) = 3;
    # T_held = min(8, 3·8/4) = 6.
    text = (
        "model m { layers = 1; hidden = 32; heads = 4; experts = 8; top_k = 2;"
        " expert_ffn = 16; activation = swiglu; capacity_factor = 1.25 }\n"
        "workload { batch = 2; seq = 4; dtype = fp32 }\n"
        "devices { group a = gpu[6..9] }\n"
        "layers 0 on a { attention; moe }\n"
    )
    graph = expand_text(text)
    ops = by_name(graph)
    for name in ("dispatch_l0", "combine_l0"):
        assert ops[name].term == comm(TermKind.ALL_TO_ALL, 6 * 32 * 4, 4, nodes=2)
        assert ops[name].gpus == (6, 7, 8, 9)
    assert ops["expert_l0_7_gpu9.up"].term == mm(3, 32, 16)
    assert ops["expert_l0_7_gpu9.gate"].term == mm(3, 32, 16)
    assert ops["expert_l0_7_gpu9.act"].term == elem(3 * 16)
    assert ops["expert_l0_7_gpu9.down"].term == mm(3, 16, 32)
    assert ops["expert_agg_l0_gpu6"].term == elem(6 * 32)
    assert ops["res2_l0_gpu6"].term == elem(8 * 32)
    assert "broadcast_l0" not in ops and "return_l0" not in ops
    # The gate comes before dispatch; combine after expert_agg; res2 after combine.
    edges = edge_set(graph)
    assert edges[("gate_l0_gpu7", "dispatch_l0")] == DATA_EDGE
    assert edges[("dispatch_l0", "expert_l0_2_gpu7.up")] == DATA_EDGE
    assert edges[("expert_agg_l0_gpu7", "combine_l0")] == DATA_EDGE
    assert edges[("combine_l0", "res2_l0_gpu7")] == DATA_EDGE


def test_embed_and_lm_head() -> None:
    # V = 10 over tp = 4: 3, 3, 2, 2 rows. embed only before layer 0, lm_head only after L-1.
    text = (
        "model m { layers = 3; hidden = 16; heads = 4; ffn = 32; vocab = 10 }\n"
        "workload { batch = 1; seq = 4 }\n"
        "devices { group a = gpu[0..3] }\n"
        "layers 0..2 on a { embed; attention; mlp; lm_head }\n"
    )
    ops = by_name(expand_text(text))
    for gpu, rows in enumerate(split(10, 4)):
        assert ops[f"embed_l0_gpu{gpu}"].term == elem(4 * 16)
        assert ops[f"lm_head_l2_gpu{gpu}"].term == mm(4, 16, rows)
    assert not [n for n in ops if n.startswith(("embed_l1", "embed_l2", "lm_head_l0"))]


# -- 2. structure -------------------------------------------------------------------------------


STRUCTURE_CASES: list[tuple[Path, int | None]] = [
    (BASELINE, None),
    (BASELINE, 2),
    (MA, None),
    (MA, 4),
    (EXAMPLES / "mixtral_8x7b_ep8.dag", None),  # m = 4 in the file
]
STRUCTURE_IDS = [f"{p.stem}-m{m or 'file'}" for p, m in STRUCTURE_CASES]


def expected_block_nodes(program: Program) -> list[tuple[str, int]]:
    """(node name without micro-batch suffix, GPU) that each block of `program` must give.

    res2 of a moe block is left out: it runs where the block's input lives.
    """
    model = program.model
    last = model.layers - 1
    expected: list[tuple[str, int]] = []
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            for block in layer_range.blocks:
                gpus = program.group(block.group).gpus
                kind = block.kind
                if kind is BlockKind.EMBED:
                    bases = ["embed"] if layer == 0 else []
                elif kind is BlockKind.LM_HEAD:
                    bases = ["lm_head"] if layer == last else []
                elif kind is BlockKind.ATTENTION:
                    bases = ["ln1", "qkv", "attn_scores", "softmax", "attn_out", "o_proj"]
                    bases.append("res1")
                elif kind is BlockKind.MLP:
                    bases = ["ln2", "mlp_up", "mlp_act", "mlp_down", "res2"]
                    if model.activation is Activation.SWIGLU:
                        bases.append("mlp_gate")
                else:
                    bases = ["ln2", "gate", "expert_agg"]
                    assert model.experts is not None
                    per = model.experts // len(gpus)
                    for rank, gpu in enumerate(gpus):
                        for j in range(rank * per, (rank + 1) * per):
                            expected.append((f"expert_l{layer}_{j}_gpu{gpu}", gpu))
                expected += [(f"{b}_l{layer}_gpu{gpu}", gpu) for b in bases for gpu in gpus]
    return expected


@pytest.mark.parametrize(("path", "mb"), STRUCTURE_CASES, ids=STRUCTURE_IDS)
def test_structure(path: Path, mb: int | None) -> None:
    graph = expand_file(path, mb)
    m = graph.program.workload.microbatches
    assert graph.microbatches == m == (mb or m)
    digraph = to_networkx(graph)
    assert nx.is_directed_acyclic_graph(digraph)
    assert digraph.number_of_nodes() == graph.num_ops
    assert digraph.number_of_edges() == graph.num_edges  # no edge repeated

    names = [graph.name(op) for op in range(graph.num_ops)]
    assert len(set(names)) == len(names)

    # Micro-batch suffixes iff m > 1, always before the product suffix.
    suffix = re.compile(r"_mb(\d+)(\.[a-z]+)?$")
    for op in graph.operations():
        found = suffix.search(op.name)
        if m > 1:
            assert found and int(found[1]) == op.microbatch, op.name
            assert op.node.endswith(f"_mb{op.microbatch}")
        else:
            assert "_mb" not in op.name
        assert op.name.startswith(op.node)

    # Every GPU of each block's group runs that block's operations, for every micro-batch.
    nodes: dict[str, set[tuple[int, ...]]] = defaultdict(set)
    for op in graph.operations():
        nodes[op.node].add(op.gpus)
    for node, gpu in expected_block_nodes(graph.program):
        for j in range(m):
            name = f"{node}_mb{j}" if m > 1 else node
            assert nodes.get(name) == {(gpu,)}, name

    # Every operation touching one GPU is totally ordered.
    programs = gpu_programs(graph)
    assert sorted(programs) == graph.gpus()


@pytest.mark.parametrize(("path", "mb"), STRUCTURE_CASES, ids=STRUCTURE_IDS)
def test_edge_kinds(path: Path, mb: int | None) -> None:
    graph = expand_file(path, mb)
    m = graph.microbatches
    assert set(np.unique(graph.edge_kind).tolist()) <= {DATA_EDGE, ORDER_EDGE}
    pairs = graph.src * graph.num_ops + graph.dst
    assert len(np.unique(pairs)) == graph.num_edges  # an edge is data or order, not both
    cross_mb = 0
    for s, d, k in zip(
        graph.src.tolist(), graph.dst.tolist(), graph.edge_kind.tolist(), strict=True
    ):
        a, b = graph.operation(s), graph.operation(d)
        shared = set(a.gpus) & set(b.gpus)
        if k == ORDER_EDGE:
            assert shared, (a.name, b.name)  # program order only joins ops of one GPU
        else:
            assert a.microbatch == b.microbatch, (a.name, b.name)
            # Data moves between GPUs only through a joint operation.
            assert shared or len(a.gpus) > 1 or len(b.gpus) > 1, (a.name, b.name)
        if a.microbatch != b.microbatch:
            cross_mb += 1
            assert k == ORDER_EDGE
    assert (cross_mb > 0) == (m > 1)


def test_edge_kinds_by_name() -> None:
    edges = edge_set(expand_file(BASELINE, 2))
    # v is read by attn_out, not attn_scores: v -> scores is program order only
    assert edges[("qkv_l0_gpu3_mb0.v", "attn_out_l0_gpu3_mb0")] == DATA_EDGE
    assert edges[("qkv_l0_gpu3_mb0.v", "attn_scores_l0_gpu3_mb0")] == ORDER_EDGE
    assert edges[("qkv_l0_gpu3_mb0.k", "attn_scores_l0_gpu3_mb0")] == DATA_EDGE
    assert edges[("res1_l0_gpu3_mb0", "res2_l0_gpu3_mb0")] == DATA_EDGE  # the residual x
    assert edges[("o_proj_l0_gpu3_mb1", "all_reduce_attn_l0_mb1")] == DATA_EDGE
    assert edges[("all_reduce_attn_l0_mb1", "res1_l0_gpu3_mb1")] == DATA_EDGE
    assert edges[("res2_l1_gpu4_mb0", "send_stage1_mb0")] == DATA_EDGE
    assert edges[("send_stage1_mb0", "recv_stage1_mb0")] == DATA_EDGE
    assert edges[("recv_stage1_mb0", "ln1_l2_gpu12_mb0")] == DATA_EDGE
    # GPipe: mb1 starts on stage 0 after mb0 leaves it.
    assert edges[("send_stage1_mb0", "ln1_l0_gpu4_mb1")] == ORDER_EDGE
    assert edges[("res2_l3_gpu9_mb0", "recv_stage1_mb1")] == ORDER_EDGE
    ma = edge_set(expand_file(MA))
    assert ma[("res1_l0_gpu2", "broadcast_l0")] == DATA_EDGE
    assert ma[("broadcast_l0", "recv_moe_l0")] == DATA_EDGE
    assert ma[("expert_agg_l0_gpu13", "return_l0")] == DATA_EDGE
    assert ma[("return_l0", "res2_l0_gpu5")] == DATA_EDGE
    assert ma[("res1_l0_gpu5", "res2_l0_gpu5")] == DATA_EDGE  # res2 adds the residual x
    assert ma[("return_l0", "recv_moe_l1")] == ORDER_EDGE  # gpu 12's next operation
    # The attention GPUs do not wait for the return in program order, only through res2.
    assert ma[("broadcast_l0", "res2_l0_gpu5")] == ORDER_EDGE
    assert ("broadcast_l0", "return_l0") not in ma


def test_seed_edge_counts() -> None:
    # Baseline, per layer: 7 chain edges per GPU in attention (ln1 -> q -> k -> v -> scores ->
    # softmax -> out -> o_proj), 8 into and 8 out of the all-reduce, 8 res1 -> ln2, 3 chain
    # edges per GPU in the mlp, 8 + 8 around its all-reduce: 120. Then 8 res2 -> ln1 inside
    # each stage (twice), 8 into send, send -> recv, 8 out of recv. Data edges come from the
    # values each step reads: q, k and v each read ln1, attn_scores reads q and k, attn_out
    # reads v, res1 and res2 read the residual x. So 7 data edges per GPU and layer lie off
    # that chain (ln1 -> k, ln1 -> v, q -> scores, k -> scores, v -> out, x -> res1,
    # x -> res2), but layer 0's attention reads no x (the program's first block): 8 fewer.
    # The chain edges q -> k, k -> v and v -> scores carry program order only (3 per GPU and
    # layer).
    baseline = expand_file(BASELINE)
    assert baseline.num_edges == 4 * 120 + 2 * 8 + 8 + 1 + 8 + 7 * 8 * 4 - 8
    assert int(baseline.edge_kind.sum()) == 3 * 8 * 4
    # MA, per layer: attention 7·12 + 12 + 12; 12 res1 -> broadcast, broadcast -> recv_moe,
    # 4 recv_moe -> ln2, 14 chain edges per MoE GPU (ln2 -> gate -> 12 expert ops -> agg),
    # 4 agg -> return, 12 return -> res2: 197. Then 12 res2 -> ln1 between layers (3 times);
    # order edges: broadcast -> res2 on each of gpus 0-11 (4 layers, 12 edges each: the
    # return is not in the attention GPUs' program order) and return -> next recv_moe on
    # gpus 12-15 (3 times). On top of that chain, from the values read: the attention
    # edges as in the baseline (7 per attention GPU and layer, but no x -> res1 in layer 0;
    # the x res2 reads is res1's, on the same GPUs); each of the 4 experts of a MoE GPU
    # reads ln2 and the gate's routing in up, then up -> act -> down, each down -> agg:
    # 8 + 8 + 4 = 20 data edges against 13 on the chain, and down_j -> up_j+1 (3) are order
    # edges. Order only, per layer: q -> k, k -> v, v -> scores (3 per attention GPU) and
    # down_j -> up_j+1 (3 per MoE GPU).
    ma = expand_file(MA)
    per_layer = 7 * 12 + 12 + 12 + 12 + 1 + 4 + 14 * 4 + 4 + 12
    off_chain = 7 * 12 + (20 + 3 - 13) * 4
    assert ma.num_edges == 4 * (per_layer + off_chain) - 12 + 3 * 12 + 4 * 12 + 3
    assert int(ma.edge_kind.sum()) == 4 * 12 + 3 + 4 * (3 * 12 + 3 * 4)


def test_every_example_is_acyclic_with_unique_names() -> None:
    for path in example_files():
        graph = expand_file(path)
        digraph = nx.DiGraph()
        digraph.add_nodes_from(range(graph.num_ops))
        digraph.add_edges_from(zip(graph.src.tolist(), graph.dst.tolist(), strict=True))
        assert nx.is_directed_acyclic_graph(digraph), path
        names = {graph.name(op) for op in range(graph.num_ops)}
        assert len(names) == graph.num_ops, path


# -- 3. FLOP conservation -----------------------------------------------------------------------


def expert_tokens(tokens: int, k: int, experts: int, capacity: Fraction) -> int:
    return math.ceil(Fraction(tokens * k, experts) * capacity)


def expected_flops(program: Program) -> int:
    """Unsharded model FLOPs for the batch, plus exactly the extras the semantics allow."""
    model, workload = program.model, program.workload
    m = workload.microbatches
    bm = workload.batch // m
    seq = workload.seq
    tokens = bm * seq
    hid = model.hidden
    total = 0
    before: Block | None = None  # the last block before, but moe (where the tokens are)
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            for block in layer_range.blocks:
                size = len(program.group(block.group).gpus)
                kind = block.kind
                # the gate runs once, token-split, where the tokens are spread over dp
                # replicas on the moe GPUs, and on a routed excursion's senders
                routes_own = before is not None and (
                    (before.dp > 1 and before.group == block.group)
                    or (before.group != block.group and block.dispatch is MoeDispatch.ROUTED)
                )
                runs = {BlockKind.EMBED: layer == 0, BlockKind.LM_HEAD: layer == model.layers - 1}
                if kind is not BlockKind.MOE and runs.get(kind, True):
                    before = block
                # attention's tp (dp replicas split tokens, not work)
                tp = block.degree
                if kind is BlockKind.ATTENTION and model.kv_lora_rank is not None:
                    total += latent_attention_flops(program, block, tokens, tp)
                elif kind is BlockKind.ATTENTION:
                    nh, nkv, d = model.heads, model.kv_heads, model.head_dim
                    assert nh is not None and nkv is not None and d is not None
                    total += 2 * tokens * hid * (nh * d)
                    total += 2 * 2 * tokens * hid * (nkv * d)
                    total += 2 * (bm * nh * keys(program, block) * d) * 2
                    total += 2 * tokens * (nh * d) * hid
                    if nkv < tp:  # each rank computes one KV head
                        total += (tp - nkv) * 2 * 2 * tokens * hid * d
                elif kind is BlockKind.MLP:
                    assert model.ffn is not None
                    mats = 3 if model.activation is Activation.SWIGLU else 2
                    total += 2 * tokens * hid * model.ffn * mats
                elif kind is BlockKind.MOE:
                    e, k, fe = model.experts, model.top_k, model.expert_ffn
                    assert e is not None and k is not None and fe is not None
                    mats = 3 if model.activation is Activation.SWIGLU else 2
                    total += 2 * tokens * hid * e  # the gate, unsharded
                    if not routes_own:
                        total += (size - 1) * 2 * tokens * hid * e  # replicated on every GPU
                    t_e = expert_tokens(tokens, k, e, Fraction(repr(model.capacity_factor)))
                    total += 2 * (tokens * k) * hid * fe * mats
                    total += 2 * (e * t_e - tokens * k) * hid * fe * mats  # capacity rounding
                    # shared experts: the tokens split over the ranks, no extra
                    shared = (model.shared_experts or 0) * (model.shared_expert_ffn or 0)
                    total += 2 * tokens * hid * shared * mats
                    total += 2 * tokens * hid if model.shared_expert_gate else 0
                elif kind is BlockKind.LM_HEAD and layer == model.layers - 1:
                    assert model.vocab is not None
                    total += 2 * tokens * hid * model.vocab
    return total * m


def pairs(block: Block, seq: int) -> int:
    """Query-key pairs per head and sequence: a fused causal kernel skips the masked half;
    explicit products compute all of them."""
    if block.kernel is AttentionKernel.FUSED and block.mask is AttentionMask.CAUSAL:
        return seq * (seq + 1) // 2
    return seq * seq


def keys(program: Program, block: Block) -> int:
    """Query-key pairs per head and sequence: S·S or S·(S+1)/2 (`pairs`); a decode step's
    one new token against its C keys, whatever the kernel."""
    if program.workload.mode is Mode.DECODE:
        assert program.workload.context is not None
        return program.workload.context
    return pairs(block, program.workload.seq)


def latent_attention_flops(program: Program, block: Block, tokens: int, tp: int) -> int:
    """MLA: q_a and kv_a whole on every rank (tp copies), the rest split by heads."""
    model, hid = program.model, program.model.hidden
    nh, r_kv, r_q = model.heads, model.kv_lora_rank, model.q_lora_rank
    nope, rope, d_v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    assert nh and r_kv and nope and rope and d_v
    bm, seq = program.workload.microbatch_size, program.workload.seq
    if r_q is None:
        query = 2 * tokens * hid * nh * (nope + rope)
    else:
        query = tp * 2 * tokens * hid * r_q + 2 * tokens * r_q * nh * (nope + rope)
    kv = tp * 2 * tokens * hid * (r_kv + rope) + 2 * tokens * r_kv * nh * (nope + d_v)
    core = 2 * bm * nh * pairs(block, seq) * (nope + rope + d_v)
    if program.workload.mode is Mode.DECODE:
        # absorbed: q_absorb and v_absorb are kv_b's weights times 2·T (kv above); scores
        # over the latent and rope key, weights·latent
        core = 2 * bm * nh * keys(program, block) * (2 * r_kv + rope)
    return query + kv + core + 2 * tokens * nh * d_v * hid


def summed_flops(graph: DeviceGraph) -> int:
    per_op = [graph.terms[int(t)].flops() for t in graph.template_term]
    return sum(per_op) * graph.microbatches


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_flop_conservation_examples(path: Path) -> None:
    graph = expand_file(path)
    assert summed_flops(graph) == graph.total_matmul_flops() == expected_flops(graph.program)


def test_flop_conservation_seed_by_hand() -> None:
    # Baseline: 4 layers of attention (nkv = nh, no extras) and gelu mlp.
    attention = 2 * T * H * 4096 * 3 + 2 * (B * 32 * S * D * S) * 2 + 2 * T * 4096 * H
    mlp = 2 * T * H * 16384 * 2
    assert expand_file(BASELINE).total_matmul_flops() == 4 * (attention + mlp)
    # MA: T_e = T, k = E = 16: no capacity extra; gate on 4 GPUs: 3 extra copies.
    gate = 2 * T * H * 16
    experts = 2 * (T * 16) * H * 16384 * 2
    assert expand_file(MA).total_matmul_flops() == 4 * (attention + gate + 3 * gate + experts)


@dataclass(frozen=True)
class Config:
    """A generated configuration: the .dag text and the parameters it was written from."""

    text: str
    layers: int
    hidden: int
    heads: int
    head_dim: int
    kv_heads: int
    ffn: int
    swiglu: bool
    experts: int
    top_k: int
    capacity: Fraction
    expert_ffn: int
    vocab: int
    microbatches: int
    microbatch_size: int
    seq: int
    w: int
    stage_layers: tuple[int, ...]
    stage_gpus: tuple[tuple[int, ...], ...]
    moe: str  # none | same | separate | shared
    moe_gpus: tuple[tuple[int, ...], ...]  # the MoE group of each stage (separate/shared)
    ends: bool  # embed and lm_head

    @property
    def tokens(self) -> int:
        return self.microbatch_size * self.seq


@st.composite
def configurations(draw: st.DrawFn) -> Config:
    """A random valid .dag file: 1-3 pipeline groups, dense or MoE layers, the MoE on the
    stage's group or on a separate group (one per stage, or one shared by every stage)."""
    layers = draw(st.integers(1, 6))
    heads = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    default_d = draw(st.sampled_from([2, 4, 8]))
    hidden = heads * default_d
    explicit_d = draw(st.none() | st.sampled_from([3, 4]))
    kv_heads = draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0]))
    ffn = draw(st.integers(8, 40))
    activation = draw(st.sampled_from(["gelu", "swiglu"]))
    experts = draw(st.sampled_from([1, 2, 4, 6, 8]))
    top_k = draw(st.integers(1, experts))
    capacity = draw(st.sampled_from(["1", "1.25", "1.1"]))
    expert_ffn = draw(st.integers(4, 24))
    vocab = draw(st.integers(8, 50))
    m = draw(st.integers(1, 3))
    bm = draw(st.integers(1, 3))
    seq = draw(st.integers(1, 6))
    dtype, w = draw(st.sampled_from([("bf16", 2), ("fp32", 4), ("fp8", 1)]))
    stages = draw(st.integers(1, min(3, layers)))
    moe = draw(st.sampled_from(["none", "same", "separate", "shared"]))
    ends = draw(st.booleans())

    ep_choices = [e for e in range(1, experts + 1) if experts % e == 0]
    if moe == "same":
        sizes = [draw(st.sampled_from([e for e in ep_choices if e <= heads]))] * stages
    else:
        sizes = [draw(st.integers(1, min(heads, 5))) for _ in range(stages)]
    moe_sizes = []
    if moe == "separate":
        moe_sizes = [draw(st.sampled_from(ep_choices)) for _ in range(stages)]
    elif moe == "shared":
        moe_sizes = [draw(st.sampled_from(ep_choices))]
    # GPU ids in order, crossing node boundaries of 8 now and then.
    next_gpu = draw(st.integers(0, 6))
    groups: list[tuple[int, ...]] = []
    for size in sizes + moe_sizes:
        groups.append(tuple(range(next_gpu, next_gpu + size)))
        next_gpu += size + draw(st.integers(0, 2))
    stage_gpus, moe_groups = groups[:stages], groups[stages:]
    if moe == "shared":
        moe_groups = moe_groups * stages

    names = [f"s{i}" for i in range(stages)] + [f"e{i}" for i in range(len(moe_sizes))]
    devices = "; ".join(
        f"group {name} = gpu[{gpus[0]}..{gpus[-1]}]"
        for name, gpus in zip(names, groups, strict=True)
    )
    counts = split(layers, stages)
    statements = []
    first = 0
    for stage, count in enumerate(counts):
        last = first + count - 1
        blocks = ["embed"] if ends and first == 0 else []
        blocks.append("attention")
        if moe == "none":
            blocks.append("mlp")
        elif moe == "same":
            blocks.append("moe")
        else:
            blocks.append(f"moe on e{stage if moe == 'separate' else 0}")
        if ends and last == layers - 1:
            blocks.append("lm_head")
        statements.append(f"layers {first}..{last} on s{stage} {{ {'; '.join(blocks)} }}")
        first = last + 1
    head_dim = f" head_dim = {explicit_d};" if explicit_d else ""
    text = (
        f"model m {{ layers = {layers}; hidden = {hidden}; heads = {heads};{head_dim}"
        f" kv_heads = {kv_heads}; ffn = {ffn}; activation = {activation};"
        f" experts = {experts}; top_k = {top_k}; expert_ffn = {expert_ffn};"
        f" capacity_factor = {capacity}; vocab = {vocab} }}\n"
        f"workload {{ batch = {bm * m}; seq = {seq}; dtype = {dtype}; microbatches = {m} }}\n"
        f"devices {{ {devices} }}\n" + "\n".join(statements) + "\n"
    )
    return Config(
        text=text,
        layers=layers,
        hidden=hidden,
        heads=heads,
        head_dim=explicit_d or default_d,
        kv_heads=kv_heads,
        ffn=ffn,
        swiglu=activation == "swiglu",
        experts=experts,
        top_k=top_k,
        capacity=Fraction(capacity),
        expert_ffn=expert_ffn,
        vocab=vocab,
        microbatches=m,
        microbatch_size=bm,
        seq=seq,
        w=w,
        stage_layers=tuple(counts),
        stage_gpus=tuple(stage_gpus),
        moe=moe,
        moe_gpus=tuple(moe_groups),
        ends=ends,
    )


def closed_form_flops(c: Config) -> int:
    """The FLOP conservation formula, from the generator's own parameters."""
    tokens, hid, nh, d, nkv = c.tokens, c.hidden, c.heads, c.head_dim, c.kv_heads
    mats = 3 if c.swiglu else 2
    total = 0
    for stage, count in enumerate(c.stage_layers):
        t = len(c.stage_gpus[stage])
        attention = 2 * tokens * hid * (nh * d) + 2 * 2 * tokens * hid * (nkv * d)
        attention += 2 * (c.microbatch_size * nh * c.seq * d * c.seq) * 2
        attention += 2 * tokens * (nh * d) * hid
        if nkv < t:
            attention += (t - nkv) * 2 * 2 * tokens * hid * d
        if c.moe == "none":
            second = 2 * tokens * hid * c.ffn * mats
        else:
            e_total, k, fe = c.experts, c.top_k, c.expert_ffn
            ep = t if c.moe == "same" else len(c.moe_gpus[stage])
            t_e = math.ceil(Fraction(tokens * k, e_total) * c.capacity)
            second = 2 * tokens * hid * e_total + (ep - 1) * 2 * tokens * hid * e_total
            second += 2 * (tokens * k) * hid * fe * mats
            second += 2 * (e_total * t_e - tokens * k) * hid * fe * mats
        total += count * (attention + second)
    if c.ends:
        total += 2 * tokens * hid * c.vocab
    return total * c.microbatches


def nodes_of(*groups: tuple[int, ...]) -> int:
    return len({gpu // 8 for group in groups for gpu in group})


def expected_ops(c: Config) -> dict[str, tuple[CostTerm, tuple[int, ...]]]:
    """Every operation's name, term and GPUs for one configuration, from the semantics."""
    tokens, hid, d, bm, seq = c.tokens, c.hidden, c.head_dim, c.microbatch_size, c.seq
    act = c.tokens * hid * c.w  # T·H·w bytes
    ops: dict[str, tuple[CostTerm, tuple[int, ...]]] = {}

    def per_gpu(base: str, layer: int, gpus: tuple[int, ...], terms: list[CostTerm]) -> None:
        for gpu, term in zip(gpus, terms, strict=True):
            ops[f"{base}_l{layer}_gpu{gpu}"] = (term, (gpu,))

    def same(base: str, layer: int, gpus: tuple[int, ...], term: CostTerm) -> None:
        per_gpu(base, layer, gpus, [term] * len(gpus))

    def joint(name: str, term: CostTerm, *groups: tuple[int, ...]) -> None:
        ops[name] = (term, tuple(sorted({g for group in groups for g in group})))

    layer = 0
    for stage, count in enumerate(c.stage_layers):
        gpus = c.stage_gpus[stage]
        t = len(gpus)
        if stage > 0:
            previous = c.stage_gpus[stage - 1]
            joint(f"send_stage{stage}", comm(TermKind.P2P, act, nodes=nodes_of(previous, gpus)),
                  previous)  # fmt: skip
            joint(f"recv_stage{stage}", SYNC, gpus)
        heads = split(c.heads, t)
        kv = split(c.kv_heads, t) if c.kv_heads >= t else [1] * t
        for _ in range(count):
            if c.ends and layer == 0:
                same("embed", 0, gpus, elem(tokens * hid))
            same("ln1", layer, gpus, elem(tokens * hid))
            for part, widths in (("q", heads), ("k", kv), ("v", kv)):
                for gpu, n in zip(gpus, widths, strict=True):
                    ops[f"qkv_l{layer}_gpu{gpu}.{part}"] = (mm(tokens, hid, n * d), (gpu,))
            per_gpu("attn_scores", layer, gpus, [mm(bm * h * seq, d, seq) for h in heads])
            per_gpu("softmax", layer, gpus, [elem(bm * h * seq * seq) for h in heads])
            per_gpu("attn_out", layer, gpus, [mm(bm * h * seq, seq, d) for h in heads])
            per_gpu("o_proj", layer, gpus, [mm(tokens, h * d, hid) for h in heads])
            if t > 1:
                term = comm(TermKind.ALL_REDUCE, act, t, nodes=nodes_of(gpus))
                joint(f"all_reduce_attn_l{layer}", term, gpus)
            same("res1", layer, gpus, elem(tokens * hid))
            if c.moe == "none":
                columns = split(c.ffn, t)
                same("ln2", layer, gpus, elem(tokens * hid))
                per_gpu("mlp_up", layer, gpus, [mm(tokens, hid, f) for f in columns])
                if c.swiglu:
                    per_gpu("mlp_gate", layer, gpus, [mm(tokens, hid, f) for f in columns])
                per_gpu("mlp_act", layer, gpus, [elem(tokens * f) for f in columns])
                per_gpu("mlp_down", layer, gpus, [mm(tokens, f, hid) for f in columns])
                if t > 1:
                    term = comm(TermKind.ALL_REDUCE, act, t, nodes=nodes_of(gpus))
                    joint(f"all_reduce_mlp_l{layer}", term, gpus)
                same("res2", layer, gpus, elem(tokens * hid))
            else:
                moe_gpus = gpus if c.moe == "same" else c.moe_gpus[stage]
                e = len(moe_gpus)
                t_e = math.ceil(Fraction(tokens * c.top_k, c.experts) * c.capacity)
                held = min(tokens, t_e * c.experts // e)
                fe = c.expert_ffn
                if c.moe != "same":
                    term = comm(TermKind.BROADCAST, act, e + 1, nodes=nodes_of(gpus, moe_gpus))
                    joint(f"broadcast_l{layer}", term, gpus)
                    joint(f"recv_moe_l{layer}", SYNC, moe_gpus)
                    term = comm(TermKind.P2P, held * hid * c.w, nodes=nodes_of(gpus, moe_gpus))
                    joint(f"return_l{layer}", term, moe_gpus)
                elif e > 1:
                    term = comm(TermKind.ALL_TO_ALL, held * hid * c.w, e, nodes=nodes_of(gpus))
                    joint(f"dispatch_l{layer}", term, gpus)
                    joint(f"combine_l{layer}", term, gpus)
                same("ln2", layer, moe_gpus, elem(tokens * hid))
                same("gate", layer, moe_gpus, mm(tokens, hid, c.experts))
                per = c.experts // e
                for rank, gpu in enumerate(moe_gpus):
                    for j in range(rank * per, (rank + 1) * per):
                        node = f"expert_l{layer}_{j}_gpu{gpu}"
                        ops[f"{node}.up"] = (mm(t_e, hid, fe), (gpu,))
                        if c.swiglu:
                            ops[f"{node}.gate"] = (mm(t_e, hid, fe), (gpu,))
                        ops[f"{node}.act"] = (elem(t_e * fe), (gpu,))
                        ops[f"{node}.down"] = (mm(t_e, fe, hid), (gpu,))
                same("expert_agg", layer, moe_gpus, elem(held * hid))
                same("res2", layer, gpus, elem(tokens * hid))
            if c.ends and layer == c.layers - 1:
                rows = split(c.vocab, t)
                per_gpu("lm_head", layer, gpus, [mm(tokens, hid, v) for v in rows])
            layer += 1
    if c.microbatches == 1:
        return ops
    with_mb: dict[str, tuple[CostTerm, tuple[int, ...]]] = {}
    for name, value in ops.items():
        node, dot, part = name.partition(".")
        for j in range(c.microbatches):
            with_mb[f"{node}_mb{j}{dot}{part}"] = value
    return with_mb


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations())
def test_random_configurations(c: Config) -> None:
    graph = expand(dagc.compile_text(c.text, "t.dag")).graph
    # FLOP conservation.
    assert graph.total_matmul_flops() == closed_form_flops(c), c.text
    assert summed_flops(graph) == graph.total_matmul_flops()
    # Every operation, its term and its GPUs, exactly as the semantics give them.
    actual = {op.name: (op.term, tuple(sorted(op.gpus))) for op in graph.operations()}
    expected = expected_ops(c)
    assert sorted(set(actual) - set(expected)) == [], c.text
    assert sorted(set(expected) - set(actual)) == [], c.text
    wrong = {n: (actual[n], expected[n]) for n in expected if actual[n] != expected[n]}
    assert not wrong, (c.text, wrong)
    # Structure: acyclic, one chain per GPU.
    assert nx.is_directed_acyclic_graph(
        nx.DiGraph(zip(graph.src.tolist(), graph.dst.tolist(), strict=True))
    )
    programs = gpu_programs(graph)
    assert sorted(programs) == graph.gpus()


# -- 4. pipeline and program order --------------------------------------------------------------


def runs(sequence: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Consecutive duplicates collapsed."""
    out: list[tuple[int, int]] = []
    for item in sequence:
        if not out or out[-1] != item:
            out.append(item)
    return out


def test_pipeline_runs_microbatch_by_microbatch() -> None:
    graph = expand_file(BASELINE, 2)
    programs = gpu_programs(graph)
    for gpu in range(8):
        ops = [graph.operation(op) for op in programs[gpu]]
        steps = runs([(op.microbatch, op.layer) for op in ops])
        assert steps == [(0, 0), (0, 1), (1, 0), (1, 1)], gpu
        assert ops[-1].name == "send_stage1_mb1"
    for gpu in range(8, 16):
        ops = [graph.operation(op) for op in programs[gpu]]
        assert runs([(op.microbatch, op.layer) for op in ops]) == [
            (0, 2),
            (0, 3),
            (1, 2),
            (1, 3),
        ]
        assert ops[0].name == "recv_stage1_mb0"
    digraph = to_networkx(graph)
    assert digraph.has_edge("send_stage1_mb0", "recv_stage1_mb0")
    assert nx.has_path(digraph, "send_stage1_mb0", "recv_stage1_mb1")
    assert not nx.has_path(digraph, "recv_stage1_mb0", "send_stage1_mb0")
    assert digraph.nodes["send_stage1_mb0"]["gpus"] == list(range(8))


def test_ma_separation_ping_pong() -> None:
    graph = expand_file(MA, 2)
    programs = gpu_programs(graph)
    for gpu in (12, 15):
        ops = [graph.operation(op) for op in programs[gpu]]
        steps = runs([(op.layer, op.microbatch) for op in ops])
        assert steps == [(layer, mb) for layer in range(4) for mb in range(2)]
        names = [op.name for op in ops]
        assert names[0] == "recv_moe_l0_mb0"
        # Layer 0's micro-batches one after the other, then layer 1's.
        assert names.index("return_l0_mb0") < names.index(f"gate_l0_gpu{gpu}_mb1")
        assert names.index("return_l0_mb1") < names.index("recv_moe_l1_mb0")
    for gpu in (0, 11):
        ops = [graph.operation(op) for op in programs[gpu]]
        # Unit (l, j): res2 of layer l-1 for j, then layer l's attention and broadcast for j;
        # after the last layer, res2 of layer 3 for every micro-batch.
        unit_of = [(op.layer + op.node.startswith("res2_"), op.microbatch) for op in ops]
        assert runs(unit_of) == [(unit, mb) for unit in range(5) for mb in range(2)]
        names = [op.name for op in ops]
        assert names[:2] == [f"ln1_l0_gpu{gpu}_mb0", f"qkv_l0_gpu{gpu}_mb0.q"]
        assert names.index("broadcast_l0_mb1") < names.index(f"res2_l0_gpu{gpu}_mb0")
        assert names.index(f"res2_l0_gpu{gpu}_mb0") < names.index(f"ln1_l1_gpu{gpu}_mb0")
        assert names[-2:] == [f"res2_l3_gpu{gpu}_mb0", f"res2_l3_gpu{gpu}_mb1"]
        assert not any(name.startswith("return_") for name in names)  # G's program only


# A separated layout: attention on x (tp = |x|), experts on y (ep = |y|). Matmul-only costs
# (2·M·K·N, unscaled) make the per-unit times closed forms of the shapes.
PINGPONG = """\
model pp {{ layers = {layers}; hidden = {hidden}; heads = {heads}; head_dim = {d}
           experts = {experts}; top_k = {top_k}; expert_ffn = {fe} }}
workload {{ batch = {batch}; seq = {seq}; microbatches = {m} }}
devices {{ group x = gpu[0..{x_last}]; group y = gpu[{y_first}..{y_last}] }}
layers 0..{last_layer} {{ attention on x; moe on y{moe_options} }}
"""


@dataclass(frozen=True)
class PingPong:
    layers: int
    m: int
    batch: int = 8
    seq: int = 16
    hidden: int = 64
    heads: int = 4
    d: int = 16
    experts: int = 4
    top_k: int = 2
    fe: int = 128
    x: int = 1  # attention GPUs
    y: int = 1  # MoE GPUs
    routed: bool = False  # dispatch=routed: ln2 and the gate on x, token-split

    def text(self) -> str:
        return PINGPONG.format(
            **{k: getattr(self, k) for k in ("layers", "hidden", "heads", "d", "experts")},
            top_k=self.top_k, fe=self.fe, batch=self.batch, seq=self.seq, m=self.m,
            x_last=self.x - 1, y_first=self.x, y_last=self.x + self.y - 1,
            last_layer=self.layers - 1, moe_options=" dispatch=routed" if self.routed else "",
        )  # fmt: skip

    def unit_times(self) -> tuple[float, float]:
        """(a, b): one micro-batch of one layer's matmuls on the busiest attention GPU and on
        a MoE GPU, from the spec's shapes."""
        bm = self.batch // self.m
        tokens = bm * self.seq
        heads = -(-self.heads // self.x)  # rank 0 holds the most heads
        cols = heads * self.d
        a = (
            3 * g(tokens, self.hidden, cols, 1)
            + g(bm * heads * self.seq, self.d, self.seq, 1)
            + g(bm * heads * self.seq, self.seq, self.d, 1)
            + g(tokens, cols, self.hidden, 1)
        )
        t_e = -(-tokens * self.top_k // self.experts)
        per_gpu = self.experts // self.y
        b = per_gpu * (g(t_e, self.hidden, self.fe, 1) + g(t_e, self.fe, self.hidden, 1))
        if self.routed:
            # the gate moves to the attention GPUs, rank 0 on its ceil(T/x) tokens; the
            # dispatch joins both sides in each one's unit (res2 l-1, attention, ln2, gate,
            # dispatch on x; dispatch, experts, return on y)
            a += g(-(-tokens // self.x), self.hidden, self.experts, 1)
        else:
            b += g(tokens, self.hidden, self.experts, 1)  # replicated on every MoE GPU
        return a, b


def pingpong_expected(c: PingPong) -> float:
    """The closed forms for L layers and m ≥ 2 micro-batches: a + L·m·b when the MoE GPUs
    are the slower side (a ≤ b; they never wait after the first unit), L·m·a + b when the
    attention GPUs are (b ≤ a; they never wait). Each is also a lower bound on any order
    (each side must do all its units, the other side's first or last unit outside them), so
    the run takes the larger of the two."""
    a, b = c.unit_times()
    lm = c.layers * c.m
    return max(a + lm * b, lm * a + b)


PINGPONG_CASES = [
    # MoE-bound: wide experts.
    PingPong(layers=1, m=2, fe=512),
    PingPong(layers=3, m=2, fe=512),
    PingPong(layers=4, m=4, fe=256),
    PingPong(layers=5, m=8, fe=128, x=2, y=2),
    # Attention-bound: narrow experts, long sequences.
    PingPong(layers=1, m=2, fe=8, seq=64),
    PingPong(layers=3, m=4, fe=8, seq=64),
    PingPong(layers=6, m=8, fe=16, seq=64, x=3, y=4, heads=6),
    PingPong(layers=2, m=2, fe=4, seq=128, x=2, y=4, experts=8),
    # dispatch=routed, both regimes
    PingPong(layers=3, m=2, fe=512, routed=True),
    PingPong(layers=5, m=8, fe=128, x=3, y=2, routed=True),
    PingPong(layers=3, m=4, fe=8, seq=64, routed=True),
    PingPong(layers=6, m=8, fe=16, seq=64, x=3, y=4, heads=6, routed=True),
]


@pytest.mark.parametrize("case", PINGPONG_CASES, ids=lambda c: f"L{c.layers}m{c.m}fe{c.fe}")
def test_pingpong_closed_forms(case: PingPong) -> None:
    a, b = case.unit_times()
    assert (a <= b) == (case.fe >= 128)  # the cases cover both regimes
    graph = expand_text(case.text())
    path = critical_path(graph, matmul_seconds(graph, 1))
    assert path.time == pytest.approx(pingpong_expected(case), rel=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.integers(1, 5),
    m=st.sampled_from([2, 4, 8]),
    fe=st.sampled_from([4, 8, 16, 64, 256, 1024]),
    seq=st.sampled_from([16, 64]),
    x=st.integers(1, 3),
    y=st.sampled_from([1, 2, 4]),
    routed=st.booleans(),
)
def test_pingpong_closed_forms_random(
    layers: int, m: int, fe: int, seq: int, x: int, y: int, routed: bool
) -> None:
    case = PingPong(layers=layers, m=m, fe=fe, seq=seq, x=x, y=y, routed=routed)
    graph = expand_text(case.text())
    path = critical_path(graph, matmul_seconds(graph, 1))
    assert path.time == pytest.approx(pingpong_expected(case), rel=1e-12)


@pytest.mark.parametrize(("fe", "moe_bound"), [(16384, True), (2048, False)])
def test_pingpong_closed_forms_at_scale(fe: int, moe_bound: bool) -> None:
    # 61 layers, 64 attention GPUs and 256 MoE GPUs, 8 micro-batches: the size that showed
    # segment order a quarter slower than ping-pong. Collapsed to one GPU per class.
    case = PingPong(
        layers=61, m=8, batch=64, seq=512, hidden=1024, heads=128, d=64,
        experts=256, top_k=8, fe=fe, x=64, y=256,
    )  # fmt: skip
    a, b = case.unit_times()
    assert (a <= b) == moe_bound
    compiled = dagc.compile_text(case.text(), "t.dag")
    graph = expand(compiled, symmetric=True).graph
    path = critical_path(graph, matmul_seconds(graph, 1))
    assert path.time == pytest.approx(pingpong_expected(case), rel=1e-12)


# -- 5. critical path ---------------------------------------------------------------------------


def test_critical_path_baseline() -> None:
    graph = expand_file(BASELINE)
    d, bm = D, B
    layer = (
        3 * g(T, H, 512)
        + g(bm * 4 * S, d, S)
        + g(bm * 4 * S, S, d)
        + g(T, 512, H)
        + g(T, H, 2048)
        + g(T, 2048, H)
    )
    expected = 4 * layer
    assert expected == pytest.approx(0.457397, abs=1e-6)
    path = critical_path(graph, matmul_seconds(graph))
    assert path.time == pytest.approx(expected, rel=1e-12)
    names = [graph.name(op) for op in path.ops]
    assert names[0] == "ln1_l0_gpu0" and names[-1] == "res2_l3_gpu8"  # ties: lowest GPU
    assert "send_stage1" in names and "recv_stage1" in names


def test_critical_path_ma_separation() -> None:
    graph = expand_file(MA)
    # The 3-head rank's attention, then the gate and the 4 experts of one MoE GPU, one
    # after another.
    attention = 3 * g(T, H, 384) + g(B * 3 * S, D, S) + g(B * 3 * S, S, D) + g(T, 384, H)
    moe = g(T, H, 16) + 4 * (g(T, H, 16384) + g(T, 16384, H))
    expected = 4 * (attention + moe)
    assert expected == pytest.approx(9.140240, abs=1e-6)
    path = critical_path(graph, matmul_seconds(graph))
    assert path.time == pytest.approx(expected, rel=1e-12)
    names = [graph.name(op) for op in path.ops]
    assert "qkv_l0_gpu0.q" in names and "expert_l0_3_gpu12.down" in names
    assert not any(name.endswith("_gpu8") for name in names)  # a 2-head rank is faster


PIPE = """\
model p {{ layers = {layers}; hidden = 64; heads = 4; ffn = 256 }}
workload {{ batch = 8; seq = 16; microbatches = {m} }}
devices {{ group x = gpu[0..1]; group y = gpu[2..3] }}
layers 0..{cut} on x {{ attention; mlp }}
layers {next}..{last} on y {{ attention; mlp }}
"""


def pipe_layer_time(m: int) -> float:
    """One layer on one GPU of tp = 2, matmul-only costs (2·M·K·N, unscaled)."""
    bm, seq, hid, heads, d, ffn = 8 // m, 16, 64, 2, 16, 128
    tokens = bm * seq
    return (
        3 * g(tokens, hid, heads * d, 1)
        + g(bm * heads * seq, d, seq, 1)
        + g(bm * heads * seq, seq, d, 1)
        + g(tokens, heads * d, hid, 1)
        + g(tokens, hid, ffn, 1)
        + g(tokens, ffn, hid, 1)
    )


@pytest.mark.parametrize("m", [1, 2, 4, 8])
def test_pipeline_rule_equal_stages(m: int) -> None:
    graph = expand_text(PIPE.format(layers=2, m=m, cut=0, next=1, last=1))
    t = pipe_layer_time(m)
    p = 2
    path = critical_path(graph, matmul_seconds(graph, 1))
    assert path.time == pytest.approx((m + p - 1) * t, rel=1e-12)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_pipeline_rule_unequal_stages(m: int) -> None:
    # Stage 0 runs layers 0..1 (2t), stage 1 layer 2 (t): Σ tₛ + (m − 1)·max tₛ.
    graph = expand_text(PIPE.format(layers=3, m=m, cut=1, next=2, last=2))
    t = pipe_layer_time(m)
    path = critical_path(graph, matmul_seconds(graph, 1))
    assert path.time == pytest.approx(3 * t + (m - 1) * 2 * t, rel=1e-12)


# -- 6. expansion diagnostics -------------------------------------------------------------------

DEADLOCK = """\
model m { layers = 4; hidden = 64; heads = 4; ffn = 256; experts = 4; top_k = 2 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group x = gpu[0..1]; group y = gpu[2..3]; group z = gpu[4..5] }
layers 0 on x { attention; mlp }
layers 1..2 on y { attention; moe on z }
layers 3 on x { attention; mlp }
"""


def test_deadlock_is_an_error_with_a_position() -> None:
    compiled = dagc.compile_text(DEADLOCK, "t.dag")
    with pytest.raises(dagc.DiagnosticError) as info:
        expand(compiled)
    errors = [d for d in info.value.diagnostics if d.severity is Severity.ERROR]
    assert len(errors) == 1
    error = errors[0]
    assert "deadlocks" in error.message
    assert error.span is not None and 4 <= error.span.line <= 6
    first = error.render().splitlines()[0]
    assert re.match(rf"t\.dag:{error.span.line}:{error.span.column}: error: .*deadlocks", first)
    assert error.notes and all(" runs `" in note.message for note in error.notes)


def test_deadlock_needs_several_microbatches() -> None:
    graph = expand_text(DEADLOCK.replace("microbatches = 2", "microbatches = 1"))
    assert nx.is_directed_acyclic_graph(to_networkx(graph))


def test_op_limit() -> None:
    compiled = dagc.compile_file(BASELINE)
    with pytest.raises(dagc.DiagnosticError) as info:
        expand(compiled, max_ops=400)
    (error,) = info.value.diagnostics
    assert error.severity is Severity.ERROR
    assert "458 device operations" in error.message  # counted by hand in test_baseline_shapes
    assert "limit of 400" in error.message
    assert error.span is not None
    assert expand(compiled, max_ops=458).graph.num_ops == 458


def test_op_limit_refuses_before_expanding() -> None:
    # The lower bound from the logical IR: 4 layers x (5 attention + 5 mlp ops) x 8 ranks
    # (attention's least is a fused qkv and a fused kernel: ln1, qkv, attn_core, o_proj, res1).
    compiled = dagc.compile_file(BASELINE)
    with pytest.raises(dagc.DiagnosticError) as info:
        expand(compiled, max_ops=10)
    (error,) = info.value.diagnostics
    assert "at least 320 device operations" in error.message
    assert "limit of 10" in error.message


@pytest.mark.parametrize(
    ("layers", "devices_and_layers"),
    [
        # A million GPUs in one tensor-parallel group: the step IR alone would take a minute.
        (4, "devices { group g = gpu[0..1048575] }\nlayers 0..3 on g { attention; mlp }"),
        (100_000, "devices { group g = gpu[0..7] }\nlayers 0..99999 on g { attention; mlp }"),
    ],
)
def test_op_limit_refuses_huge_programs_before_lowering(
    layers: int, devices_and_layers: str
) -> None:
    text = (
        f"model m {{ layers = {layers}; hidden = 1048576; heads = 1048576; ffn = 1048576 }}\n"
        f"workload {{ batch = 2; seq = 8 }}\n{devices_and_layers}\n"
    )
    compiled = dagc.compile_text(text, "t.dag")
    for symmetric in (None, True, False):
        with pytest.raises(dagc.DiagnosticError) as info:
            expand(compiled, max_ops=1, symmetric=symmetric)
        assert "at least" in info.value.diagnostics[0].message


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_least_operations_is_a_lower_bound(path: Path) -> None:
    from dagc.expand import least_operations

    compiled = dagc.compile_file(path)
    program = compiled.program
    full = expand(compiled, symmetric=False).graph.num_ops
    collapsed = expand(compiled, symmetric=True).graph.num_ops
    assert 0 < least_operations(program, collapsed=False) <= full
    assert 0 < least_operations(program, collapsed=True) <= collapsed


MOE_CAPACITY = """\
model m {{ layers = 1; hidden = 16; heads = 2; experts = 4; top_k = {k}; expert_ffn = 8;
  capacity_factor = {cf} }}
workload {{ batch = 2; seq = 4 }}
devices {{ group a = gpu[0..1] }}
layers 0 on a {{ attention; moe }}
"""


def test_capacity_warning() -> None:
    # top_k = E and capacity_factor = 2: T_e = 2T slots, more than the T = 8 tokens.
    expansion = expand(dagc.compile_text(MOE_CAPACITY.format(k=4, cf=2), "t.dag"))
    warnings = [w for w in expansion.warnings if "capacity_factor" in w.message]
    assert len(warnings) == 1
    assert warnings[0].severity is Severity.WARNING
    assert "16" in warnings[0].message and "8 tokens" in warnings[0].message
    ops = by_name(expansion.graph)
    assert ops["expert_l0_0_gpu0.up"].term == mm(16, 16, 8)
    # T_e = T exactly, or fewer slots than tokens: no warning.
    for k, cf in ((4, 1), (2, 1.25)):
        quiet = expand(dagc.compile_text(MOE_CAPACITY.format(k=k, cf=cf), "t.dag"))
        assert not quiet.warnings


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[str, list[float]]:
    """A dense gelu pipeline of 1-3 stages (tp may differ per stage, splits may be uneven)
    and each stage's time under matmul-only costs, from the semantics by hand."""
    heads = draw(st.sampled_from([2, 3, 4, 6]))
    d = draw(st.sampled_from([2, 4]))
    hidden, ffn = heads * d, draw(st.integers(4, 24))
    m = draw(st.integers(1, 4))
    bm, seq = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    stages = draw(st.integers(1, 3))
    counts = [draw(st.integers(1, 3)) for _ in range(stages)]
    sizes = [draw(st.integers(1, min(heads, ffn, 4))) for _ in range(stages)]
    tokens = bm * seq
    groups, statements, times = [], [], []
    first = gpu = 0
    for stage, (count, size) in enumerate(zip(counts, sizes, strict=True)):
        groups.append(f"group s{stage} = gpu[{gpu}..{gpu + size - 1}]")
        gpu += size
        statements.append(f"layers {first}..{first + count - 1} on s{stage} {{ attention; mlp }}")
        first += count
        # Rank 0 holds the most heads and ffn columns; the all-reduces make every layer
        # wait for it, so it sets the stage's pace.
        h, f = split(heads, size)[0], split(ffn, size)[0]
        layer = (
            3 * g(tokens, hidden, h * d, 1)
            + 2 * g(bm * h * seq, d, seq, 1)
            + g(tokens, h * d, hidden, 1)
            + 2 * g(tokens, hidden, f, 1)
        )
        times.append(count * layer)
    text = (
        f"model p {{ layers = {first}; hidden = {hidden}; heads = {heads}; ffn = {ffn} }}\n"
        f"workload {{ batch = {bm * m}; seq = {seq}; microbatches = {m} }}\n"
        f"devices {{ {'; '.join(groups)} }}\n" + "\n".join(statements) + "\n"
    )
    return text, times


@settings(max_examples=30, deadline=None)
@given(pipelines())
def test_pipeline_rule_random(case: tuple[str, list[float]]) -> None:
    text, times = case
    graph = expand_text(text)
    m = graph.microbatches
    path = critical_path(graph, matmul_seconds(graph, 1))
    assert path.time == pytest.approx(sum(times) + (m - 1) * max(times), rel=1e-12), text


def test_moe_opening_a_layer_on_a_new_group_is_a_pipeline_stage() -> None:
    text = (
        "model m { layers = 2; hidden = 64; heads = 4; ffn = 256; experts = 4; top_k = 2 }\n"
        "workload { batch = 4; seq = 8 }\n"
        "devices { group x = gpu[0..1]; group y = gpu[2..3] }\n"
        "layers 0 on x { attention; mlp }\n"
        "layers 1 on y { moe; attention }\n"
    )
    ops = by_name(expand_text(text))
    assert "broadcast_l1" not in ops and "return_l1" not in ops
    assert ops["send_stage1"].gpus == (0, 1) and ops["recv_stage1"].gpus == (2, 3)
    assert "res2_l1_gpu2" in ops and "dispatch_l1" in ops


# -- critical paths of the larger examples, from the pipeline rule -----------------------------


def test_critical_path_llama_pipeline() -> None:
    # 4 stages of 20 layers, m = 8, tp = 8: h = 8 heads, kv = 1, F_i = 3584 (swiglu);
    # lm_head (V_i = 4000) only on the last stage. Σ tₛ + (m − 1)·max tₛ.
    graph = expand_file(EXAMPLES / "llama70b_tp8_pp4.dag")
    tokens, hid, d, bm, seq = 8 * 4096, 8192, 128, 8, 4096
    layer = (
        g(tokens, hid, 8 * d)
        + 2 * g(tokens, hid, 1 * d)
        + g(bm * 8 * seq, d, seq)
        + g(bm * 8 * seq, seq, d)
        + g(tokens, 8 * d, hid)
        + 2 * g(tokens, hid, 3584)
        + g(tokens, 3584, hid)
    )
    lm_head = g(tokens, hid, 4000)
    stages = [20 * layer] * 3 + [20 * layer + lm_head]
    expected = sum(stages) + 7 * max(stages)
    path = critical_path(graph, matmul_seconds(graph))
    assert path.time == pytest.approx(expected, rel=1e-12)


def test_critical_path_mixtral_single_group() -> None:
    # One group of 8, m = 4: every GPU does the same work, micro-batch after micro-batch.
    # fused qkv (4 + 2·1 heads), one expert per GPU with T_e = T·2/8 tokens, swiglu.
    graph = expand_file(EXAMPLES / "mixtral_8x7b_ep8.dag")
    tokens, hid, d, bm, seq = 8 * 4096, 4096, 128, 8, 4096
    t_e = tokens * 2 // 8
    layer = (
        g(tokens, hid, (4 + 2 * 1) * d)
        + g(bm * 4 * seq, d, seq)
        + g(bm * 4 * seq, seq, d)
        + g(tokens, 4 * d, hid)
        + g(tokens, hid, 8)
        + 2 * g(t_e, hid, 14336)
        + g(t_e, 14336, hid)
    )
    per_microbatch = 32 * layer + g(tokens, hid, 4000)
    path = critical_path(graph, matmul_seconds(graph))
    assert path.time == pytest.approx(4 * per_microbatch, rel=1e-12)


# The layout of the former examples/deepseek_v3_128gpu.dag (a DeepSeek-V3-sized model with
# plain multi-head attention and no shared expert; the example is now the real model):
# a pipeline whose first stage also runs the dense layers.
DEEPSEEK_SIZED = """\
model deepseek_v3 {
  layers = 61; hidden = 7168; heads = 128; head_dim = 128; ffn = 18_432
  experts = 256; top_k = 8; expert_ffn = 2048; activation = swiglu; vocab = 129_280
}
workload { batch = 32; seq = 4096; dtype = fp8; microbatches = 4 }
devices {
  gpu = h200
  group stage0 = gpu[0..31]; group stage1 = gpu[32..63]
  group stage2 = gpu[64..95]; group stage3 = gpu[96..127]
}
layers 0..2 on stage0 { embed; attention; mlp }
layers 3..60 on stage0, stage1, stage2, stage3 pp=4 { attention; moe; lm_head }
"""


def test_critical_path_deepseek_pipeline() -> None:
    # Stage 0: layers 0..2 dense and 15 MoE layers; stages 1-3: 15, 14, 14 MoE layers, the
    # last with lm_head. tp = ep = 32: h = kv = 4 heads, F_i = 576, 8 experts per GPU with
    # T_e = ceil(T·8/256) = T/32 tokens, swiglu; V_i = 129280/32 = 4040. m = 4.
    graph = expand_text(DEEPSEEK_SIZED)
    tokens, hid, d, bm, seq = 8 * 4096, 7168, 128, 8, 4096
    attention = (
        3 * g(tokens, hid, 4 * d)
        + g(bm * 4 * seq, d, seq)
        + g(bm * 4 * seq, seq, d)
        + g(tokens, 4 * d, hid)
    )
    dense = attention + 2 * g(tokens, hid, 576) + g(tokens, 576, hid)
    t_e = math.ceil(tokens * 8 / 256)
    moe = attention + g(tokens, hid, 256) + 8 * (2 * g(t_e, hid, 2048) + g(t_e, 2048, hid))
    lm_head = g(tokens, hid, 4040)
    stages = [3 * dense + 15 * moe, 15 * moe, 14 * moe, 14 * moe + lm_head]
    expected = sum(stages) + 3 * max(stages)
    path = critical_path(graph, matmul_seconds(graph))
    assert path.time == pytest.approx(expected, rel=1e-12)


def test_rank_order_and_node_size() -> None:
    # Rank 0 of gpu[3, 0..2] is gpu 3: it gets the extra head (5 over 4: 2, 1, 1, 1). The
    # MoE group gpu[7, 5] holds experts 0-1 on gpu 7 and 2-3 on gpu 5. node_size = 2:
    # gpus {0,1,2,3} span nodes 0-1; with 5 and 7, nodes 0-3.
    text = (
        "model m { layers = 1; hidden = 40; heads = 5; ffn = 10; experts = 4; top_k = 1 }\n"
        "workload { batch = 1; seq = 4 }\n"
        "devices { node_size = 2; group a = gpu[3, 0..2]; group e = gpu[7, 5] }\n"
        "layers 0 on a { attention; moe on e }\n"
    )
    ops = by_name(expand_text(text))
    d, tokens = 8, 4
    assert ops["qkv_l0_gpu3.q"].term == mm(tokens, 40, 2 * d)
    assert ops["qkv_l0_gpu0.q"].term == mm(tokens, 40, 1 * d)
    assert ops["all_reduce_attn_l0"].term == comm(TermKind.ALL_REDUCE, 4 * 40 * 2, 4, nodes=2)
    assert {n for n in ops if n.startswith("expert_l0_") and n.endswith(".up")} == {
        "expert_l0_0_gpu7.up",
        "expert_l0_1_gpu7.up",
        "expert_l0_2_gpu5.up",
        "expert_l0_3_gpu5.up",
    }
    # T_e = ceil(4·1/4) = 1; T_held = min(4, 1·4/2) = 2.
    assert ops["expert_l0_2_gpu5.up"].term == mm(1, 40, 10)
    assert ops["broadcast_l0"].term == comm(TermKind.BROADCAST, 4 * 40 * 2, 3, nodes=4)
    assert ops["return_l0"].term == comm(TermKind.P2P, 2 * 40 * 2, nodes=4)
    assert ops["expert_agg_l0_gpu7"].term == elem(2 * 40)


# -- expansion runs the front half once -------------------------------------------------------


def _counting_place(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the runs of the first pass (place): once per run of the front half."""
    import dataclasses

    import dagc.passes.manager as manager

    calls: list[int] = []
    first = manager.PIPELINE[0]
    assert first.name == "place"

    def place(ir: object) -> object:
        calls.append(1)
        return first.run(ir)

    counted = (dataclasses.replace(first, run=place), *manager.PIPELINE[1:])
    monkeypatch.setattr(manager, "PIPELINE", counted)
    return calls


@pytest.mark.parametrize("collapses", [False, True])
def test_automatic_symmetry_runs_the_front_half_once(
    monkeypatch: pytest.MonkeyPatch, collapses: bool
) -> None:
    """Between the cheap lower bound and the true size, the decision needs the step IR:
    it is taken on the step IR the expansion goes on from, not on a second one."""
    import dagc.expand as expansion

    compiled = dagc.compile_file(EXAMPLES / "seed/ma_separation.dag")
    full = expansion.expand(compiled, symmetric=False).graph.num_ops
    least = expansion.least_operations(compiled.program, collapsed=False)
    assert least < full
    threshold = least if collapses else full
    monkeypatch.setattr(expansion, "SYMMETRY_THRESHOLD", threshold)
    calls = _counting_place(monkeypatch)
    graph = expansion.expand(compiled, symmetric=None).graph
    assert len(calls) == 1
    assert (graph.symmetry is not None) is collapses
