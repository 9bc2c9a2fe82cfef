"""Attention data parallelism outside attention, and MoE in a decode step
(docs/semantics.md, "Attention data parallelism" and "Decode: active experts").

Blocks with dp replicas (tp = 1) work on their replica's own tokens T_r = split(Bm, dp)[r]·S;
a moe block after them routes each GPU's own tokens (dispatch and combine carry
max_r T_r·k·H·w); an excursion from a dp group gets all T tokens by broadcast, or routes
them from the senders' own tokens. In a decode step with A = ceil(T·k·cf) < E active
experts only A experts run, one token each. Programs with dp or decode are built from
compiled ones with dataclasses.replace. Every expected number is hand arithmetic from the
semantics, written in the test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dagc
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.analysis.formula import evaluate
from dagc.api import analyze_compiled, cost_model, formula_compiled
from dagc.cli import app
from dagc.compiler import CompileResult
from dagc.diagnostics import Severity
from dagc.expand import expand
from dagc.ir.logical import Block, BlockKind, Mode
from dagc.ir.steps import Step, StepProgram
from dagc.ir.terms import TermKind
from dagc.ir.values import split
from dagc.passes.manager import PassOptions, run_passes
from helpers import EXAMPLES, check

W = 2  # bf16
H = 64


def compiled_with(
    text: str, *, dp: dict[str, int] | None = None, decode: int | None = None
) -> CompileResult:
    """`text` compiled, then each non-moe block on a group named in `dp` made dp replicas
    of one GPU (tp = 1), and with `decode` = C a decode step (S = 1, context C)."""
    compiled = dagc.compile_text(text, "t.dag")
    program = compiled.program
    replicas = dp or {}

    def replicate(block: Block) -> Block:
        if block.group in replicas and block.kind is not BlockKind.MOE:
            return dataclasses.replace(block, degree=1, dp=replicas[block.group])
        return block

    ranges = tuple(
        dataclasses.replace(r, blocks=tuple(replicate(b) for b in r.blocks)) for r in program.ranges
    )
    program = dataclasses.replace(program, ranges=ranges)
    if decode is not None:
        workload = dataclasses.replace(program.workload, mode=Mode.DECODE, seq=1, context=decode)
        program = dataclasses.replace(program, workload=workload)
    return dataclasses.replace(compiled, program=program)


def lowered(compiled: CompileResult) -> StepProgram:
    """The step IR after insert-transfers."""
    result = run_passes(compiled.program, until="insert-transfers")
    assert isinstance(result, StepProgram)
    return result


def steps_named(steps: StepProgram, base: str, layer: int) -> list[Step]:
    return [s for b in steps.blocks for s in b.steps if s.base == base and s.layer == layer]


def step(steps: StepProgram, base: str, layer: int, part: str = "") -> Step:
    [found] = [s for s in steps_named(steps, base, layer) if s.part == part]
    return found


def args(found: Step) -> list[tuple[int, ...]]:
    return [term.args for term in found.terms]


def verified(compiled: CompileResult) -> int:
    """The whole pipeline with the verifier after every pass, full and collapsed; returns
    the expanded graph's matmul FLOPs."""
    flops = 0
    for symmetric in (False, True):
        options = PassOptions(verify_each=True)
        graph = expand(compiled, options=options, symmetric=symmetric).graph
        if not symmetric:
            flops = graph.total_matmul_flops()
    return flops


# -- dp replicas before a moe block on the same GPUs ---------------------------------------

# Layer 0: embed and mlp with dp = 4 replicas on 4 GPUs; layer 1: moe (ep = 4) on the same
# GPUs, then lm_head with dp = 4. B = 6, S = 3: Bm_r = split(6, 4) = 2, 2, 1, 1 sequences,
# T_r = 6, 6, 3, 3 tokens, T = 18. E = 8, k = 2: T_e = ceil(18·2/8) = 5, 2 experts a GPU.
SAME_GROUP = """
model m {
  layers = 2; hidden = 64; heads = 4; head_dim = 16; ffn = 128; activation = swiglu
  experts = 8; top_k = 2; expert_ffn = 32; vocab = 100
}
workload { batch = 6; seq = 3 }
devices { group g = gpu[0..3] }
layers 0..0 on g {
  embed
  mlp tp=4
}
layers 1..1 on g {
  moe
  lm_head tp=4
}
"""
T_R = [6, 6, 3, 3]


def same_group() -> CompileResult:
    return compiled_with(SAME_GROUP, dp={"g": 4})


def test_replicas_work_on_their_own_tokens() -> None:
    steps = lowered(same_group())
    assert args(step(steps, "embed", 0)) == [(t * H,) for t in T_R]
    assert args(step(steps, "ln2", 0)) == [(t * H,) for t in T_R]
    for base in ("mlp_up", "mlp_gate"):
        assert args(step(steps, base, 0)) == [(t, H, 128) for t in T_R]
    assert args(step(steps, "mlp_act", 0)) == [(t * 128,) for t in T_R]
    assert args(step(steps, "mlp_down", 0)) == [(t, 128, H) for t in T_R]
    assert args(step(steps, "res2", 0)) == [(t * H,) for t in T_R]
    assert args(step(steps, "lm_head", 1)) == [(t, H, 100) for t in T_R]
    # no collective inside a replicated block; the residual split by tokens
    mlp = [b for b in steps.blocks if b.kind is BlockKind.MLP]
    assert not any(s.joint for b in mlp for s in b.steps)
    (x,) = step(steps, "res2", 0).writes
    assert x.name == "x_l0_mlp" and x.placement == split("tokens") and x.gpus == (0, 1, 2, 3)
    (logits,) = step(steps, "lm_head", 1).writes
    assert logits.placement == split("tokens")


def test_moe_after_replicas_routes_each_gpus_own_tokens() -> None:
    steps = lowered(same_group())
    assert args(step(steps, "ln2", 1)) == [(t * H,) for t in T_R]
    # the gate on each GPU's own tokens: not replicated
    assert args(step(steps, "gate", 1)) == [(t, H, 8) for t in T_R]
    # dispatch and combine: max_r T_r·k·H·w = 6·2·64·2 = 1536 per rank, over 4 ranks
    for base in ("dispatch", "combine"):
        term = step(steps, base, 1).terms[0]
        assert (term.kind, term.args) == (TermKind.ALL_TO_ALL, (6 * 2 * H * W, 4))
    # the experts keep the global rule: T_e = 5 tokens each
    up = steps_named(steps, "expert", 1)[0]
    assert up.part == ".up" and args(up) == [(5, H, 32)] * 4
    assert up.experts == (0, 2, 4, 6)
    # expert_agg: min(T, T_e·E/e) = min(18, 10) tokens
    assert args(step(steps, "expert_agg", 1)) == [(10 * H,)] * 4
    assert args(step(steps, "res2", 1)) == [(t * H,) for t in T_R]
    (out,) = step(steps, "combine", 1).writes
    assert out.placement == split("tokens")


def test_moe_after_replicas_names() -> None:
    graph = expand(same_group()).graph
    names = {graph.name(op) for op in range(graph.num_ops)}
    assert {"dispatch_l1", "combine_l1", "gate_l1_gpu3", "res2_l1_gpu2"} <= names
    assert {"expert_l1_7_gpu3.down", "lm_head_l1_gpu0", "embed_l0_gpu1"} <= names
    assert "all_reduce_mlp_l0" not in names


def test_moe_after_replicas_conserves_flops() -> None:
    t = 18
    mlp = 3 * 2 * t * H * 128  # up, gate, down on every token once
    gate = 2 * t * H * 8  # once: each GPU routes its own tokens
    experts = 8 * 5 * 3 * 2 * H * 32  # E·T_e token slots
    head = 2 * t * H * 100
    assert verified(same_group()) == mlp + gate + experts + head


# -- an excursion from a dp group ------------------------------------------------------------

# embed and lm_head with dp = 2 on X = gpu 0, 1; the moe of layer 0 on G = gpu 2..5 (ep = 4).
# B = 3, S = 2: Bm_r = 2, 1; T_r = 4, 2; T = 6. E = 8, k = 2: T_e = ceil(6·2/8) = 2.
EXCURSION = """
model m {{
  layers = 1; hidden = 64; heads = 4; head_dim = 16; activation = swiglu
  experts = 8; top_k = 2; expert_ffn = 32; vocab = 100
}}
workload {{ batch = 3; seq = 2 }}
devices {{ group x = gpu[0..1]; group g = gpu[2..5] }}
layers 0 {{
  embed on x
  moe on g ep=4{dispatch}
  lm_head on x tp=2
}}
"""


def excursion(routed: bool) -> CompileResult:
    text = EXCURSION.format(dispatch=" dispatch=routed" if routed else "")
    return compiled_with(text, dp={"x": 2})


def test_broadcast_from_a_dp_group() -> None:
    steps = lowered(excursion(routed=False))
    # all T tokens to every MoE GPU: T·H·w = 6·64·2 bytes, the senders and the 4 MoE GPUs
    broadcast = step(steps, "broadcast", 0)
    assert broadcast.gpus == (0, 1)
    assert (broadcast.terms[0].kind, broadcast.terms[0].args) == (
        TermKind.BROADCAST,
        (6 * H * W, 5),
    )
    assert args(step(steps, "gate", 0)) == [(6, H, 8)] * 4
    # the return: min(T, T_e·E/e) = 4 tokens from each MoE GPU; res2 on X's own tokens
    back = step(steps, "return", 0)
    assert back.terms[0].args == (4 * H * W,)
    (returned,) = back.writes
    assert returned.gpus == (0, 1) and returned.placement == split("tokens")
    res2 = step(steps, "res2", 0)
    assert res2.gpus == (0, 1) and args(res2) == [(4 * H,), (2 * H,)]
    assert args(step(steps, "lm_head", 0)) == [(4, H, 100), (2, H, 100)]


def test_routed_from_a_dp_group() -> None:
    steps = lowered(excursion(routed=True))
    # ln2 and the gate on each X GPU's own tokens
    assert step(steps, "gate", 0).gpus == (0, 1)
    assert args(step(steps, "ln2", 0)) == [(4 * H,), (2 * H,)]
    assert args(step(steps, "gate", 0)) == [(4, H, 8), (2, H, 8)]
    # dispatch: max(max_r T_r·k, T_e·E/e) = max(4·2, 2·2) = 8 tokens, over 2 + 4 ranks
    dispatch = step(steps, "dispatch", 0)
    assert dispatch.terms[0].args == (8 * H * W, 6)
    assert args(step(steps, "res2", 0)) == [(4 * H,), (2 * H,)]


@pytest.mark.parametrize("routed", [False, True])
def test_excursion_from_a_dp_group_verifies(routed: bool) -> None:
    t = 6
    gate = 2 * t * H * 8 * (1 if routed else 4)  # replicated on G's 4 GPUs by broadcast
    experts = 8 * 2 * 3 * 2 * H * 32
    head = 2 * t * H * 100
    assert verified(excursion(routed)) == gate + experts + head


# -- decode: active experts --------------------------------------------------------------------

# moe (ep = 4) on 4 GPUs, one decode step at context 100 (the layers hold no attention:
# its decode step is tests/test_decode.py's); E = 16, k = 2: 4 local experts a GPU.
DECODE = """
model m {{
  layers = 2; hidden = 64; heads = 4; head_dim = 16; activation = swiglu
  experts = 16; top_k = 2; expert_ffn = 32{shared}
}}
workload {{ batch = {batch}; seq = 8 }}
devices {{ group g = gpu[0..3] }}
layers 0..1 on g {{ moe }}
"""


def decode(batch: int, shared: str = "") -> CompileResult:
    return compiled_with(DECODE.format(batch=batch, shared=shared), decode=100)


def test_decode_runs_only_the_active_experts() -> None:
    # T = 3 tokens, A = 3·2 = 6 < 16: split(6, 4) = 2, 2, 1, 1 experts on the 4 GPUs
    steps = lowered(decode(3))
    ups = [s for s in steps_named(steps, "expert", 0) if s.part == ".up"]
    assert [s.experts for s in ups] == [(0, 4, 8, 12), (1, 5)]
    assert [s.gpus for s in ups] == [(0, 1, 2, 3), (0, 1)]
    assert all(args(s) == [(1, H, 32)] * len(s.gpus) for s in ups)
    # dispatch: the most tokens a GPU's experts receive, ceil(6/4) = 2
    assert step(steps, "dispatch", 0).terms[0].args == (2 * H * W, 4)
    graph = expand(decode(3)).graph
    names = {graph.name(op) for op in range(graph.num_ops)}
    assert "expert_l0_5_gpu1.up" in names
    assert "expert_l0_9_gpu2.up" not in names  # the third local expert of GPU 2 is idle


def test_decode_with_fewer_active_experts_than_gpus() -> None:
    # T = 1, A = 2: two GPUs run one expert each, the other two nothing but the router
    steps = lowered(decode(1))
    [up] = [s for s in steps_named(steps, "expert", 0) if s.part == ".up"]
    assert up.gpus == (0, 1) and up.experts == (0, 4)
    assert step(steps, "expert_agg", 0).gpus == (0, 1)
    assert step(steps, "combine", 0).gpus == (0, 1, 2, 3)


def test_decode_with_as_many_active_experts_as_experts_keeps_the_rule() -> None:
    # T = 8, A = 16 = E: every expert, T_e = ceil(8·2/16) = 1
    steps = lowered(decode(8))
    ups = [s for s in steps_named(steps, "expert", 0) if s.part == ".up"]
    assert len(ups) == 4 and all(s.gpus == (0, 1, 2, 3) for s in ups)


@pytest.mark.parametrize("batch", [1, 3, 8, 12])
def test_decode_conserves_flops(batch: int) -> None:
    t, k, fe, layers = batch, 2, 32, 2
    gate = 4 * 2 * t * H * 16  # replicated on the 4 GPUs
    active = t * k
    slots = active if active < 16 else 16 * -(-active // 16)  # A slots, or E·T_e
    experts = slots * 3 * 2 * H * fe
    if active < 16:
        assert experts == t * k * 2 * 3 * H * fe  # no capacity rounding
    assert verified(decode(batch)) == layers * (gate + experts)


def test_decode_shared_experts_skip_ranks_without_tokens() -> None:
    # T = 1 < e = 4: the shared expert on GPU 0 alone; A = 2: experts on GPUs 0 and 1
    steps = lowered(decode(1, "; shared_experts = 1"))
    assert step(steps, "shared_expert", 0, ".up").gpus == (0,)
    assert step(steps, "expert_agg", 0).gpus == (0, 1)
    verified(decode(1, "; shared_experts = 1"))


# -- the formula -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compiled",
    [same_group, lambda: excursion(True), lambda: decode(3)],
    ids=["same-group", "routed-excursion", "decode"],
)
def test_formula_is_the_critical_path(compiled: object) -> None:
    program = compiled()  # type: ignore[operator]
    result = formula_compiled(program)
    assert result.exact
    graph = expand(program).graph
    model, _ = cost_model(program.program)
    path = critical_path(graph, op_costs(graph, model.term_costs(graph.terms.terms))).time
    assert evaluate(result.expression, model.term_seconds) == pytest.approx(path, rel=1e-12)


# -- diagnostics ---------------------------------------------------------------------------------

UNEVEN = """model m { layers = 2; hidden = 64; heads = 4; ffn = 128; vocab = 100 }
workload { batch = 6; seq = 4 }
devices { group g = gpu[0..3] }
layers 0..1 on g {
  embed dp=4
  mlp dp=4
  lm_head dp=4
}
"""


def test_uneven_replicas_warn_once_per_group(tmp_path: Path) -> None:
    # Bm = 6 over dp = 4: split(6, 4) = 2, 2, 1, 1 sequences (allowed, reported)
    message = (
        "a micro-batch's 6 sequences do not split evenly over dp=4 replicas:"
        " replicas 0-1 get 2 sequences, replicas 2-3 get 1"
    )
    (warning,) = dagc.compile_text(UNEVEN, path="t.dag").warnings
    check(
        warning,
        5,
        12,
        message,
        severity=Severity.WARNING,
        help="the replicas with the most sequences set the pace; a micro-batch of a multiple"
        " of 4 sequences splits evenly",
        width=1,
    )
    path = tmp_path / "t.dag"
    path.write_text(UNEVEN, encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path), "--werror"])
    assert result.exit_code == 2
    assert message in result.output
    even = UNEVEN.replace("batch = 6", "batch = 8")
    assert dagc.compile_text(even, path="t.dag").warnings == ()


# -- attention with dp replicas and an EP moe layer, from .dag text -----------------------------

# Every GPU an attention replica (dp = 4, tp = 1) and 2 of the 8 experts (ep = 4). B = 6
# over 4 replicas: Bm_r = 2, 2, 1, 1 (uneven: a warning). Prefill S = 3, or decode C = 50.
ATTENTION_DP = """
model m {{
  layers = 2; hidden = 64; heads = 4; kv_heads = 2; head_dim = 16; activation = swiglu
  experts = 8; top_k = 2; expert_ffn = 32; vocab = 100
}}
workload {{ {workload} }}
devices {{ group g = gpu[0..3] }}
layers 0..1 on g {{
  embed dp=4
  attention dp=4
  moe
  lm_head dp=4
}}
"""
BM_R = [2, 2, 1, 1]


def attention_dp(workload: str) -> CompileResult:
    return dagc.compile_text(ATTENTION_DP.format(workload=workload), "t.dag")


@pytest.mark.parametrize(
    ("workload", "seq"),
    [("batch = 6; seq = 3", 3), ("mode = decode; batch = 6; context = 50", 1)],
    ids=["prefill", "decode"],
)
def test_attention_replicas_and_ep_moe(workload: str, seq: int) -> None:
    compiled = attention_dp(workload)
    (warning,) = compiled.warnings  # 6 sequences over 4 replicas
    assert "do not split evenly over dp=4" in warning.message
    steps = lowered(compiled)
    t_r = [b * seq for b in BM_R]
    t = sum(t_r)
    # attention on each replica's own tokens: all 4 heads, 2 KV heads, no all-reduce
    assert args(step(steps, "qkv", 1, ".q")) == [(n, H, 4 * 16) for n in t_r]
    assert args(step(steps, "qkv", 1, ".k")) == [(n, H, 2 * 16) for n in t_r]
    assert args(step(steps, "o_proj", 1)) == [(n, 64, H) for n in t_r]
    assert not steps_named(steps, "all_reduce_attn", 1)
    # moe: the gate on own tokens, dispatch/combine max_r T_r·k·H·w, T_e over all T
    assert args(step(steps, "gate", 1)) == [(n, H, 8) for n in t_r]
    for base in ("dispatch", "combine"):
        assert step(steps, base, 1).terms[0].args == (max(t_r) * 2 * H * W, 4)
    t_e = -(-t * 2 // 8)  # ceil(T·k/E)
    ups = [s for s in steps_named(steps, "expert", 1) if s.part == ".up"]
    assert [s.experts for s in ups] == [(0, 2, 4, 6), (1, 3, 5, 7)]
    assert all(args(s) == [(t_e, H, 32)] * 4 for s in ups)
    assert args(step(steps, "res2", 1)) == [(n * H,) for n in t_r]
    assert args(step(steps, "lm_head", 1)) == [(n, H, 100) for n in t_r]
    graph = expand(compiled).graph
    names = {graph.name(op) for op in range(graph.num_ops)}
    assert {"dispatch_l1", "combine_l1", "gate_l1_gpu3", "expert_l1_7_gpu3.down"} <= names
    assert {"res1_l1_gpu2", "res2_l1_gpu2", "lm_head_l1_gpu1", "embed_l0_gpu3"} <= names
    # FLOPs: the model's, the gate once, E·T_e expert slots (no capacity rounding here)
    attention = 2 * t * H * (4 + 2 + 2) * 16 + 2 * t * 64 * H
    if seq == 1:
        attention += 2 * t * 4 * 50 * (16 + 16)  # each new token against its 50 keys
    else:
        attention += 2 * sum(BM_R) * 4 * 3 * 3 * (16 + 16)  # explicit: all S·S pairs
    moe = 2 * t * H * 8 + 8 * t_e * 3 * 2 * H * 32
    assert verified(compiled) == 2 * (attention + moe) + 2 * t * H * 100


@pytest.mark.parametrize(
    "workload", ["batch = 8; seq = 3", "mode = decode; batch = 8; context = 50"]
)
def test_attention_dp_formula_is_the_critical_path(workload: str) -> None:
    compiled = attention_dp(workload)
    assert compiled.warnings == ()
    result = formula_compiled(compiled)
    assert result.exact
    graph = expand(compiled).graph
    model, _ = cost_model(compiled.program)
    path = critical_path(graph, op_costs(graph, model.term_costs(graph.terms.terms))).time
    assert evaluate(result.expression, model.term_seconds) == pytest.approx(path, rel=1e-12)


def test_qwen3_decode_dp8_example_by_hand() -> None:
    # B = 256 over dp = 8: 32 sequences a GPU; E = 128, k = 8: T_e = 256·8/128 = 16 tokens
    # for each of a GPU's 16 experts; dispatch 32·8·H·w = 32·8·2048·2 bytes a rank.
    example = EXAMPLES / "serving" / "qwen3_30b_a3b_decode_dp8.dag"
    steps = lowered(dagc.compile_file(example))
    assert args(step(steps, "gate", 5)) == [(32, 2048, 128)] * 8
    assert step(steps, "dispatch", 5).terms[0].args == (32 * 8 * 2048 * 2, 8)
    ups = [s for s in steps_named(steps, "expert", 5) if s.part == ".up"]
    assert len(ups) == 16 and args(ups[0]) == [(16, 2048, 768)] * 8
    assert args(step(steps, "attn_decode", 5)) == [(32, 32, 4, 4096, 128, 128)] * 8


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_idle_experts_weights_are_held(batch: int) -> None:
    # Every GPU holds its 4 experts (3 products of H·Fe) and the gate (H·E) in each of the
    # 2 layers, and the shared expert (3·H·Fs), whichever of them run in the decode step.
    compiled = decode(batch, "; shared_experts = 1")
    analysis = analyze_compiled(compiled).analysis
    per_layer = H * 16 + 4 * 3 * H * 32 + 3 * H * 32
    assert {g.gpu: g.weight_bytes for g in analysis.gpus} == dict.fromkeys(
        range(4), 2 * per_layer * W
    )


# -- ping-pong with experts on part of the group ----------------------------------------------

SEPARATED_SMALL_DECODE = """\
model tiny {
  layers = 2; hidden = 256; heads = 4; ffn = 512; experts = 8; top_k = 2; expert_ffn = 128
  attention_kernel = fused
}
workload { mode = decode; batch = 6; context = 64; microbatches = 2 }
devices {
  group attn = gpu[0..1]
  group experts = gpu[2..5]
}
layers 0..1 on attn {
  attention dp=2
  moe on experts ep=4 dispatch=routed
}
"""


def test_pingpong_with_experts_on_part_of_the_group_does_not_deadlock() -> None:
    # T = 3 tokens per micro-batch, A = 6 < E = 8: ranks 0 and 1 of the experts run two
    # experts, ranks 2 and 3 one, so the second local expert's step covers gpus 2 and 3 only.
    # That is still the experts group's own work: gpus 4 and 5 must not start a new
    # ping-pong segment after it (which would put micro-batch 1's dispatch before
    # micro-batch 0's experts and deadlock).
    compiled = dagc.compile_text(SEPARATED_SMALL_DECODE, "t.dag")
    graph = expand(compiled, options=PassOptions(verify_each=True)).graph
    names = [graph.name(op) for op in range(graph.num_ops)]
    second = [n for n in names if n.startswith("expert_l0_") and n.endswith("_mb0.up")]
    assert {n.split("_gpu")[1].split("_")[0] for n in second} == {"2", "3", "4", "5"}
    assert any(n.startswith("expert_l0_1_gpu2_mb0") for n in names)
    assert not any(n.startswith("expert_l0_7_gpu5") for n in names)
    analysis = analyze_compiled(compiled).analysis
    assert analysis.total_s > 0
