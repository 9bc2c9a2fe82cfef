"""The backward pass (dagc/passes/backward.py): shapes, names, phases, collectives and
FLOPs of the backward of a training micro-batch, worked out by hand from the semantics
(docs/semantics.md, "Training: the backward").

DENSE: 2 layers, H = 64, 4 heads of d = 16, F = 128, V = 100, batch 4 x seq 8 in 2
micro-batches: Bm = 2, T = 16; tp = 2, so each rank holds 2 heads (32 columns of q, k and
v), 64 ffn columns and 50 vocabulary rows; w = 2 (bf16).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dagc
from dagc.expand import expand, least_operations
from dagc.ir.device import DATA_EDGE, DeviceGraph
from dagc.ir.steps import BlockSteps, IterationKind, Phase, Step, StepProgram
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.verify import verify
from dagc.passes.backward import saved_values
from dagc.passes.manager import PassOptions, lower_to_steps, run_passes

TRAINING = "training { dp = 1 }\n"
DENSE = """
model m { layers = 2; hidden = 64; heads = 4; ffn = 128; vocab = 100 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group g = gpu[0..1] }
layers 0..1 on g { embed; attention tp=2; mlp tp=2; lm_head tp=2 }
"""
T, H, D, F, V, BM, S, M = 16, 64, 16, 128, 100, 2, 8, 2

# MoE: T = 16, H = 32, 4 experts of Fe = 24 (2 per GPU), top_k 2: T_e = 16·2/4 = 8.
MOE = """
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group g = gpu[0..1] }
layers 0..1 on g { attention tp=2; moe ep=2 }
"""

# Two stages of two GPUs, 4 micro-batches of one sequence: T = 8, T·H·w = 8·64·2 = 1024.
PIPELINE = """
model m { layers = 4; hidden = 64; heads = 4; ffn = 128; vocab = 100 }
workload { batch = 4; seq = 8; microbatches = 4 }
devices { group s0 = gpu[0..1]; group s1 = gpu[2..3] }
layers 0..3 on s0, s1 pp=2 { embed; attention tp=2; mlp tp=2; lm_head tp=2 }
"""


def _steps(text: str) -> StepProgram:
    return lower_to_steps(dagc.compile_text(text + TRAINING, "t.dag").program)


def _graph(text: str) -> DeviceGraph:
    return expand(dagc.compile_text(text + TRAINING, "t.dag")).graph


def _backward_blocks(steps: StepProgram) -> list[BlockSteps]:
    return [b for b in steps.blocks if b.backward]


def _step(steps: StepProgram, base: str, layer: int, part: str = "") -> Step:
    found = [
        s
        for b in _backward_blocks(steps)
        for s in b.steps
        if (s.base, s.layer, s.part) == (base, layer, part)
    ]
    assert len(found) == 1, (base, layer, part, len(found))
    return found[0]


def _get(m: int, k: int, n: int) -> CostTerm:
    return CostTerm(TermKind.MATMUL, (m, k, n))


@pytest.fixture(scope="module")
def dense() -> StepProgram:
    return _steps(DENSE)


def test_prefill_has_no_backward() -> None:
    steps = lower_to_steps(dagc.compile_text(DENSE, "t.dag").program)
    assert not _backward_blocks(steps)
    assert all(s.phase is Phase.FORWARD for s in steps.steps())


def test_backward_blocks_are_the_forward_reversed(dense: StepProgram) -> None:
    # the data-parallel pass's blocks (the iteration's) are neither
    blocks = [b for b in dense.blocks if not isinstance(b.kind, IterationKind)]
    forward = [(b.kind, b.layer) for b in blocks if not b.backward]
    backward = [(b.kind, b.layer) for b in _backward_blocks(dense)]
    assert backward == forward[::-1]
    assert dense.blocks[: len(forward)] == tuple(b for b in blocks if not b.backward)


@pytest.mark.parametrize(
    ("base", "part", "forward", "dgrad", "wgrad"),
    [
        # [M,K]x[K,N] -> dgrad [M,N]x[N,K], wgrad [K,M]x[M,N]
        ("qkv", ".q", (T, H, 2 * D), (T, 2 * D, H), (H, T, 2 * D)),
        ("qkv", ".k", (T, H, 2 * D), (T, 2 * D, H), (H, T, 2 * D)),
        ("o_proj", "", (T, 2 * D, H), (T, H, 2 * D), (2 * D, T, H)),
        ("mlp_up", "", (T, H, F // 2), (T, F // 2, H), (H, T, F // 2)),
        ("mlp_down", "", (T, F // 2, H), (T, H, F // 2), (F // 2, T, H)),
        ("lm_head", "", (T, H, V // 2), (T, V // 2, H), (H, T, V // 2)),
    ],
)
def test_weight_product_gradients(
    dense: StepProgram,
    base: str,
    part: str,
    forward: tuple[int, int, int],
    dgrad: tuple[int, int, int],
    wgrad: tuple[int, int, int],
) -> None:
    layer = 1
    d = _step(dense, f"{base}_dgrad", layer, part)
    w = _step(dense, f"{base}_wgrad", layer, part)
    assert d.terms == (_get(*dgrad),) * 2 and d.phase is Phase.BACKWARD
    assert w.terms == (_get(*wgrad),) * 2 and w.phase is Phase.WEIGHT_GRAD
    assert d.op_name(0, 0) == f"{base}_dgrad_l{layer}_gpu0_mb0{part}"
    fwd = [s for s in dense.steps() if (s.base, s.layer, s.part) == (base, layer, part)]
    assert fwd[0].terms == (_get(*forward),) * 2
    assert w.op_name(1, None) == f"{base}_wgrad_l{layer}_gpu1{part}"
    # the weight gradient reads the saved input first, then the output gradient
    assert not w.reads[0].name.startswith("d_")
    assert all(v.name.startswith("d_") for v in d.reads)
    assert w.writes[0].name.startswith("dw_")


def test_explicit_attention_gradients(dense: StepProgram) -> None:
    # Q·Kᵀ is Get_Time(Bm·S·h, d, S) = (32, 16, 8): dQ = dS·K and dK = dSᵀ·Q are
    # Get_Time(32, 8, 16) each; weights·V is Get_Time(32, 8, 16): dP = dO·Vᵀ is
    # Get_Time(32, 16, 8) and dV = Pᵀ·dO is Get_Time(32, 8, 16).
    rows = BM * S * 2
    assert _step(dense, "attn_scores_dgrad", 0, ".q").terms[0] == _get(rows, S, D)
    assert _step(dense, "attn_scores_dgrad", 0, ".k").terms[0] == _get(rows, S, D)
    probs = _step(dense, "attn_out_dgrad", 0, ".probs")
    value = _step(dense, "attn_out_dgrad", 0, ".v")
    assert probs.terms[0] == _get(rows, D, S)
    assert value.terms[0] == _get(rows, S, D)
    assert [v.name for v in probs.reads] == ["d_attn_l0", "v_l0"]
    assert [v.name for v in value.reads] == ["probs_l0", "d_attn_l0"]
    softmax = _step(dense, "softmax_bwd", 0)
    assert softmax.terms[0] == CostTerm(TermKind.ELEMENTWISE, (rows * S,))
    assert {v.name for v in softmax.reads} == {"d_probs_l0", "scores_l0"}


def test_elementwise_and_embed_backward(dense: StepProgram) -> None:
    ln1 = _step(dense, "ln1_bwd", 0)
    assert ln1.terms[0] == CostTerm(TermKind.ELEMENTWISE, (T * H,))
    assert ln1.phase is Phase.BACKWARD
    # a residual add's backward needs only the gradient
    res1 = _step(dense, "res1_bwd", 0)
    assert all(v.name.startswith("d_") for v in res1.reads)
    embed = _step(dense, "embed_wgrad", 0)
    assert embed.phase is Phase.WEIGHT_GRAD
    assert embed.terms[0] == CostTerm(TermKind.ELEMENTWISE, (T * H,))
    loss = _step(dense, "loss_bwd", 1)
    assert loss.terms[0] == CostTerm(TermKind.ELEMENTWISE, (T * V // 2,))
    assert [v.name for v in loss.reads] == ["logits_l1"]


def _bases(block: BlockSteps) -> list[str]:
    return [s.base + s.part for s in block.steps]


def test_tensor_parallel_backward_all_reduce(dense: StepProgram) -> None:
    attention = next(b for b in _backward_blocks(dense) if b.kind == "attention" and b.layer == 0)
    bases = _bases(attention)
    reduce = bases.index("all_reduce_attn_bwd")
    # after every qkv dgrad, before ln1's backward; the forward all-reduce has no backward
    assert {i for i, b in enumerate(bases) if b.startswith("qkv_dgrad")} < set(range(reduce))
    assert bases[reduce + 1] == "ln1_bwd"
    assert not any(b.startswith("all_reduce_attn_bwd") for b in bases[reduce + 1 :])
    step = attention.steps[reduce]
    assert step.joint and step.gpus == (0, 1) and step.phase is Phase.BACKWARD
    assert step.terms[0] == CostTerm(TermKind.ALL_REDUCE, (T * H * 2, 2))
    assert step.op_name(0, None) == "all_reduce_attn_bwd_l0"
    mlp = next(b for b in _backward_blocks(dense) if b.kind == "mlp" and b.layer == 0)
    bases = _bases(mlp)
    assert bases.index("all_reduce_mlp_bwd") == bases.index("ln2_bwd") - 1
    assert bases.index("mlp_up_dgrad") < bases.index("all_reduce_mlp_bwd")
    # lm_head's vocabulary-parallel product leaves a partial gradient of x: summed
    head = next(b for b in _backward_blocks(dense) if b.kind == "lm_head")
    assert _bases(head) == ["loss_bwd", "lm_head_dgrad", "lm_head_wgrad", "all_reduce_head_bwd"]


def test_single_gpu_backward_has_no_collective() -> None:
    text = DENSE.replace("tp=2", "tp=1").replace("gpu[0..1]", "gpu[0]")
    steps = _steps(text)
    assert not any(s.joint for b in _backward_blocks(steps) for s in b.steps)


def test_moe_backward() -> None:
    steps = _steps(MOE)
    moe = next(b for b in _backward_blocks(steps) if b.kind == "moe" and b.layer == 1)
    forward = next(b for b in steps.blocks if b.kind == "moe" and b.layer == 1)
    by_base = {s.base: s for s in forward.steps}
    bases = _bases(moe)
    assert bases.index("combine_bwd") < bases.index("expert_agg_bwd") < bases.index("dispatch_bwd")
    assert bases.index("dispatch_bwd") < bases.index("gate_dgrad")
    for name in ("combine", "dispatch"):
        back = next(s for s in moe.steps if s.base == f"{name}_bwd")
        assert back.terms == by_base[name].terms  # the same payload
        assert back.joint and back.phase is Phase.BACKWARD
    # each local expert: up Get_Time(T_e, H, Fe) = (8, 32, 24)
    ups = [s for s in moe.steps if (s.base, s.part) == ("expert_dgrad", ".up")]
    assert sorted(s.experts for s in ups) == [(0, 2), (1, 3)]
    assert all(s.terms == (_get(8, 24, 32),) * 2 for s in ups)
    wgrads = [s for s in moe.steps if (s.base, s.part) == ("expert_wgrad", ".up")]
    assert all(s.terms == (_get(32, 8, 24),) * 2 for s in wgrads)
    assert wgrads[0].op_name(0, None).startswith("expert_wgrad_l1_")
    gate = next(s for s in moe.steps if s.base == "gate_dgrad")
    assert gate.terms[0] == _get(16, 4, 32)


def test_pipeline_gradient_sends() -> None:
    steps = _steps(PIPELINE)
    transfers = [b for b in _backward_blocks(steps) if b.kind == "transfer"]
    assert len(transfers) == 1
    send, recv = transfers[0].steps
    assert send.op_name(0, 0) == "send_grad_stage1_mb0"
    assert recv.op_name(0, 0) == "recv_grad_stage1_mb0"
    assert send.gpus == (2, 3) and recv.gpus == (0, 1)
    assert send.terms[0] == CostTerm(TermKind.P2P, (8 * 64 * 2,))
    assert recv.terms[0].kind is TermKind.SYNC
    assert send.phase is recv.phase is Phase.BACKWARD
    # the transfer comes right after the backward of stage 1's first block
    index = steps.blocks.index(transfers[0])
    assert (steps.blocks[index - 1].kind, steps.blocks[index - 1].layer) == ("attention", 2)
    assert steps.blocks[index + 1].gpus == (0, 1)


def test_split_sends_gather_the_gradient() -> None:
    text = PIPELINE.replace("devices {", "devices { split_sends = true;")
    steps = _steps(text)
    (transfer,) = [b for b in _backward_blocks(steps) if b.kind == "transfer"]
    send, recv, gather = transfer.steps
    assert recv.terms[0].kind is TermKind.SYNC and recv.gpus == (0, 1)
    assert send.terms[0] == CostTerm(TermKind.P2P, (8 * 64 * 2 // 2,))
    assert gather.base == "gather_grad_stage1" and gather.gpus == (0, 1)
    assert gather.terms[0] == CostTerm(TermKind.ALL_GATHER, (8 * 64 * 2 // 2, 2))


def _edges(graph: DeviceGraph) -> Iterator[tuple[str, str]]:
    for s, d, k in zip(
        graph.src.tolist(), graph.dst.tolist(), graph.edge_kind.tolist(), strict=True
    ):
        if k == DATA_EDGE:
            yield graph.name(s), graph.name(d)


def test_backward_depends_on_saved_activations() -> None:
    graph = _graph(DENSE)
    edges = set(_edges(graph))
    # the weight gradient of q reads ln1's output, the value gradient reads softmax's
    assert ("ln1_l0_gpu0_mb1", "qkv_wgrad_l0_gpu0_mb1.q") in edges
    assert ("softmax_l0_gpu1_mb0", "attn_out_dgrad_l0_gpu1_mb0.v") in edges
    assert ("mlp_act_l1_gpu0_mb0", "mlp_down_wgrad_l1_gpu0_mb0") in edges
    # and on the gradient from the block after it
    assert ("res2_bwd_l0_gpu0_mb0", "mlp_down_dgrad_l0_gpu0_mb0") in edges
    saved = saved_values(_steps(DENSE))
    assert {"ln1_l0", "q_l0", "k_l0", "probs_l0", "act_l1", "logits_l1"} <= set(saved)


def test_pipeline_backward_edges() -> None:
    graph = _graph(PIPELINE)
    edges = set(_edges(graph))
    assert ("send_grad_stage1_mb2", "recv_grad_stage1_mb2") in edges
    assert ("recv_grad_stage1_mb2", "res2_bwd_l1_gpu0_mb2") in edges


def _forward_flops(attention_core: int, layers: int, mlp: bool = True) -> int:
    """One micro-batch's forward matmul FLOPs of DENSE (by hand from the semantics)."""
    projections = 2 * T * H * (3 * 4 * D) + 2 * T * (4 * D) * H
    mlp_flops = 2 * T * H * F * 2 if mlp else 0
    return layers * (projections + attention_core + mlp_flops) + 2 * T * H * V


def _executed(graph: DeviceGraph) -> tuple[int, int]:
    """(executed matmul FLOPs of all micro-batches, of which the fused backward's own
    recompute)."""
    total = recompute = 0
    for step in graph.steps:
        for term in step.terms:
            total += term.flops()
            recompute += term.recomputed_flops()
    return total * graph.microbatches, recompute * graph.microbatches


def test_executed_flops_are_three_times_the_forward() -> None:
    graph = _graph(DENSE)
    core = 2 * BM * 4 * S * S * (D + D)  # explicit: every S·S pair
    total, recompute = _executed(graph)
    assert recompute == 0
    assert total == 3 * _forward_flops(core, 2) * M


def test_fused_causal_backward_names_its_recompute() -> None:
    text = DENSE.replace("attention tp=2", "attention tp=2 kernel=fused mask=causal")
    graph = _graph(text)
    pairs = S * (S + 1) // 2
    core = 2 * BM * 4 * pairs * (D + D)
    total, recompute = _executed(graph)
    # Causal_Attn_Bwd_Time: 2·Bm·h·P·(3·d + 2·d); Q·Kᵀ recomputed: 2·Bm·h·P·d
    assert recompute == 2 * (2 * BM * 4 * pairs * D) * M
    assert total == 3 * _forward_flops(core, 2) * M + recompute
    bwd = [s for s in graph.steps if s.base == "attn_core_bwd"]
    assert bwd and bwd[0].terms[0].kind is TermKind.CAUSAL_ATTENTION_BWD


def test_least_operations_stays_a_lower_bound() -> None:
    for text in (DENSE, MOE, PIPELINE):
        program = dagc.compile_text(text + TRAINING, "t.dag").program
        graph = _graph(text)
        assert least_operations(program, collapsed=False) <= graph.num_ops
        prefill = dagc.compile_text(text, "t.dag").program
        assert least_operations(program, collapsed=False) == 2 * least_operations(
            prefill, collapsed=False
        )


# -- recomputation ------------------------------------------------------------------------------


def _recompute(text: str, mode: str) -> StepProgram:
    return lower_to_steps(
        dagc.compile_text(text + f"training {{ recompute = {mode} }}\n", "t.dag").program
    )


def test_selective_recompute_reruns_the_attention_core() -> None:
    steps = _recompute(DENSE, "selective")
    back = next(b for b in _backward_blocks(steps) if b.kind == "attention" and b.layer == 0)
    reruns = [s for s in back.steps if s.phase is Phase.RECOMPUTE]
    assert [s.base for s in reruns] == [
        "attn_scores_recompute",
        "softmax_recompute",
        "attn_out_recompute",
    ]
    assert back.steps[: len(reruns)] == tuple(reruns)  # first thing in the block's backward
    assert reruns[0].terms[0] == _get(BM * S * 2, D, S)
    assert [v.name for v in reruns[0].reads] == ["q_l0", "k_l0"]
    assert [v.name for v in reruns[2].writes] == ["attn_l0_rc"]
    softmax = _step(steps, "softmax_bwd", 0)
    assert {v.name for v in softmax.reads} == {"d_probs_l0", "scores_l0_rc"}
    saved = set(saved_values(steps))
    assert {"scores_l0", "probs_l0", "attn_l0"}.isdisjoint(saved)
    assert {"q_l0", "k_l0", "v_l0", "ln1_l0"} <= saved
    # executed FLOPs: 3x the forward plus the core once more
    graph = expand(dagc.compile_text(DENSE + "training { recompute = selective }\n", "t.dag")).graph
    core = 2 * BM * 4 * S * S * (D + D)
    assert _executed(graph)[0] == (3 * _forward_flops(core, 2) + 2 * core) * M


def test_full_recompute_reruns_each_layer() -> None:
    steps = _recompute(DENSE, "full")
    back = next(b for b in _backward_blocks(steps) if b.kind == "mlp" and b.layer == 1)
    reruns = [s.base for s in back.steps if s.phase is Phase.RECOMPUTE]
    assert reruns[:2] == ["ln1_recompute", "qkv_recompute"]
    assert "all_reduce_attn_recompute" in reruns and reruns[-1] == "res2_recompute"
    assert not any(
        s.phase is Phase.RECOMPUTE
        for b in _backward_blocks(steps)
        if b.kind != "mlp"
        for s in b.steps
    )
    # only each layer's input (and lm_head's) is saved
    assert set(saved_values(steps)) == {"x_l0_embed", "x_l0_mlp", "x_l1_mlp", "logits_l1"}
    graph = expand(dagc.compile_text(DENSE + "training { recompute = full }\n", "t.dag")).graph
    core = 2 * BM * 4 * S * S * (D + D)
    layer = _forward_flops(core, 2) - _forward_flops(core, 0)
    assert _executed(graph)[0] == (3 * _forward_flops(core, 2) + layer) * M


# -- sequence parallelism ---------------------------------------------------------------------


def test_sequence_parallel_forward_and_backward() -> None:
    text = DENSE + "training { sequence_parallel = true }\n"
    steps = lower_to_steps(dagc.compile_text(text, "t.dag").program)
    piece = T * H * 2 // 2  # T·H·w / t
    attention = next(b for b in steps.blocks if b.kind == "attention" and not b.backward)
    bases = [s.base for s in attention.steps]
    assert bases[:2] == ["ln1", "all_gather_attn"]
    assert bases.index("reduce_scatter_attn") == bases.index("o_proj") + 1
    assert "all_reduce_attn" not in bases
    by_base = {s.base: s for s in attention.steps}
    assert by_base["all_gather_attn"].terms[0] == CostTerm(TermKind.ALL_GATHER, (piece, 2))
    assert by_base["reduce_scatter_attn"].terms[0] == CostTerm(TermKind.REDUCE_SCATTER, (piece, 2))
    # the norm and the residual add on T/t = 8 tokens per rank
    half = CostTerm(TermKind.ELEMENTWISE, (T // 2 * H,))
    assert by_base["ln1"].terms == (half, half) and by_base["res1"].terms == (half, half)
    embed = next(b for b in steps.blocks if b.kind == "embed")
    assert embed.steps[0].terms == (half, half)
    # the last mlp gathers the residual for lm_head
    last_mlp = next(b for b in steps.blocks if b.kind == "mlp" and b.layer == 1)
    assert last_mlp.steps[-1].base == "all_gather_mlp_out"
    # backward: the pairs swapped, no backward all-reduce inside a run of SP blocks
    back = next(b for b in _backward_blocks(steps) if b.kind == "attention" and b.layer == 1)
    bases = [s.base for s in back.steps]
    assert bases.index("all_gather_attn_bwd") == bases.index("o_proj_dgrad") - 1
    assert bases.index("reduce_scatter_attn_bwd") == bases.index("ln1_bwd") - 1
    assert max(i for i, b in enumerate(bases) if b == "qkv_dgrad") < bases.index(
        "reduce_scatter_attn_bwd"
    )
    assert "all_reduce_attn_bwd" not in bases
    scatter = next(s for s in back.steps if s.base == "reduce_scatter_attn_bwd")
    assert scatter.terms[0] == CostTerm(TermKind.REDUCE_SCATTER, (piece, 2))


# -- the verifier after every pass, on training files -------------------------------------------

CASES = {
    "dense": DENSE,
    "fused_causal": DENSE.replace("attention tp=2", "attention tp=2 kernel=fused mask=causal"),
    "gqa_qk_norm": DENSE.replace("heads = 4;", "heads = 4; kv_heads = 1; qk_norm = true;"),
    "swiglu_fused_qkv": DENSE.replace("ffn = 128", "ffn = 128; activation = swiglu").replace(
        "attention tp=2", "attention tp=2 fused_qkv"
    ),
    "mla": DENSE.replace(
        "heads = 4;",
        "heads = 4; kv_lora_rank = 16; q_lora_rank = 24; qk_nope_head_dim = 8;"
        " qk_rope_head_dim = 4; v_head_dim = 8;",
    ).replace("embed;", "embed vocab_parallel;"),
    "moe": MOE,
    "moe_shared": MOE.replace(
        "expert_ffn = 24",
        "expert_ffn = 24; shared_experts = 1; shared_expert_gate = true; activation = swiglu",
    ),
    "pipeline": PIPELINE,
    "split_sends": PIPELINE.replace("devices {", "devices { split_sends = true;"),
    "excursion": """
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24 }
workload { batch = 4; seq = 8; microbatches = 2 }
devices { group attn = gpu[0..1]; group moe = gpu[2..3] }
layers 0..1 { attention on attn tp=2; moe on moe ep=2 }
""",
}
CASES["routed"] = CASES["excursion"].replace("ep=2", "ep=2 dispatch=routed")
CASES["excursion_shared"] = CASES["excursion"].replace(
    "expert_ffn = 24", "expert_ffn = 24; shared_experts = 1"
)


@pytest.mark.parametrize("sequence_parallel", [False, True])
@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_verifier_passes_after_every_pass(
    name: str, recompute: str, sequence_parallel: bool
) -> None:
    sp = str(sequence_parallel).lower()
    text = CASES[name] + f"training {{ recompute = {recompute}; sequence_parallel = {sp} }}\n"
    compiled = dagc.compile_text(text, "t.dag")
    for symmetric in (False, True):
        graph = expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric).graph
        verify(graph)
    graph = run_passes(compiled.program, PassOptions(verify_each=True))
    assert any(s.phase is Phase.BACKWARD for s in graph.steps)
